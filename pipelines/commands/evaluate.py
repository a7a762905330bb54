"""Score a model with the official SemEval-2025 Task 4 metrics, membership inference and MMLU.

Generates greedily from each row's raw input (256 new tokens, batched; identical to one row at a
time), scores regurgitation (ROUGE-L recall, sc rows) and knowledge (exact match, qa rows) per
split and task, the harmonic-mean task aggregate (forget values as 1 - x), the MIA AUC on
mia_data/ member/nonmember documents, MMLU through lm-eval, and the final aggregate. Writes
OUT/scores.json (the official key names plus details; the same for the same model, data and
settings, byte for byte), OUT/predictions.csv and OUT/timings.json (wall times), and prints a table.
With --baseline it also prints and writes a before/after comparison (OUT/comparison.md, .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.options import add_model_options, model_options, quiet_progress
from tracing import settings
from tracing.io import check_output_path
from unlearn.eval.config import EvalConfig

NAME = "evaluate"
HELP = "score a model: SemEval-2025 Task 4 metrics, MIA and MMLU"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder (or Hub id) to score")
    p.add_argument("--data", required=True, help="SemEval data: organizers' layout folder, forget/retain.jsonl folder or Hub dataset id")
    p.add_argument("--out", required=True, help="folder for scores.json and predictions.csv (created if needed)")
    settings.add_arguments(p, EvalConfig)  # one option per EvalConfig field, its help from the field
    p.add_argument("--baseline", default=None, help="a scores.json (or its folder) to compare with: prints and writes comparison.md / comparison.json; None = no comparison")
    p.add_argument("--overwrite", action="store_true", help="replace existing scores.json / predictions.csv / comparison files in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(**settings.from_args(args, EvalConfig))


def run(args: argparse.Namespace) -> int:
    from unlearn.eval.report import check_outputs, comparison_table, compare, load_scores, scores_tables, write_comparison, write_outputs

    from rich.console import Console

    from unlearn.eval.core import prepare, run_evaluation
    from unlearn.models import load_model

    config = config_from_args(args)
    config.check()
    if args.quiet:
        quiet_progress()
    model_dir = Path(args.model)
    inputs = [Path(args.data)] + ([Path(args.mia)] if args.mia and args.mia != "off" else [])
    check_output_path(Path(args.out), model_dir if model_dir.exists() else None, inputs, what="the scores")
    check_outputs(args.out, overwrite=args.overwrite)
    baseline = load_scores(args.baseline) if args.baseline else None
    if baseline is not None:
        check_outputs(args.out, overwrite=args.overwrite, names=("comparison.json", "comparison.md"))
    plan = prepare(args.data, config)  # data, MIA and MMLU problems show before the model loads
    model, tok = load_model(args.model, model_options(args))
    result = run_evaluation(model, tok, plan.data, config, progress=not args.quiet, plan=plan)
    paths = write_outputs(args.out, result.scores, result.predictions, overwrite=args.overwrite, timings=result.timings)
    console = Console(soft_wrap=True)
    for table in scores_tables(result.scores):
        console.print(table)
    mmlu = result.scores.get("mmlu") or {}
    if mmlu.get("mode") not in (None, "off"):
        print(f"MMLU: {mmlu['source']}" + (f" ({mmlu['why']})" if mmlu.get("why") else ""), file=sys.stderr)
    for warning in result.scores["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if baseline is not None:
        rows = compare(baseline, result.scores)
        console.print(comparison_table(rows, "baseline", "this model"))
        write_comparison(args.out, rows, str(args.baseline), str(args.model), overwrite=args.overwrite)
    t = result.timings
    print(f"scored {sum(result.scores['rows'].values())} rows ({result.scores['splits']}) in {t['total_s']:.1f} s; wrote {paths['scores']} and {paths['predictions']}")
    return 0
