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
from tracing.io import check_output_path
from unlearn.eval.config import MMLU_THRESHOLD, EvalConfig
from unlearn.eval.mmlu import ENV_DIR

NAME = "evaluate"
HELP = "score a model: SemEval-2025 Task 4 metrics, MIA and MMLU"


def _subjects(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = EvalConfig()
    p.add_argument("--model", required=True, help="model folder (or Hub id) to score")
    p.add_argument("--data", required=True, help="SemEval data: organizers' layout folder, forget/retain.jsonl folder or Hub dataset id")
    p.add_argument("--out", required=True, help="folder for scores.json and predictions.csv (created if needed)")
    p.add_argument("--splits", default=d.splits, choices=("auto", "train", "validation"), help="which rows to score; auto = train (the rows an unlearning request names; `amnesia unlearn` also reads the validation rows, which select its checkpoint) when the data has them, else validation")
    p.add_argument("--mia", default=None, help="folder with member.jsonl and nonmember.jsonl; None = DATA/mia_data when present; 'off' to skip")
    p.add_argument("--mmlu", default=d.mmlu, help=f"auto (the local copy in ${ENV_DIR} if set, else the Hub when it answers, else builtin), hub (lm-eval's mmlu from the Hub), builtin (the package's subset: 5 test questions per subject, 285 in all), off, or a folder in hails/mmlu_no_train layout")
    p.add_argument("--mmlu-shots", type=int, default=d.mmlu_shots, help="few-shot examples per MMLU question (0 = lm-eval's default; 5 = the classic MMLU setting)")
    p.add_argument("--mmlu-limit", type=int, default=None, help="questions per MMLU subject; None = all")
    p.add_argument("--mmlu-subjects", type=_subjects, default=None, help="comma-separated MMLU subjects, e.g. anatomy,philosophy; None = all 57")
    p.add_argument("--mmlu-threshold", type=float, default=MMLU_THRESHOLD, help="warn when the MMLU average is below this (the shared task's floor for 7B)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch for generation, NLL and MMLU; None = automatic from a memory budget")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens generated per row (the organizers use 256)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N rows of each split (a quick look; numbers are not comparable); None = all")
    p.add_argument("--prompt-format", default=d.prompt_format, choices=("raw", "chat"), help="raw = each input as is (the organizers' format); chat = wrapped in the tokenizer's chat template; use the format the model was trained with (a warning says when its unlearn.json names another)")
    p.add_argument("--clean-up-spaces", action=argparse.BooleanOptionalAction, default=d.clean_up_spaces, help="decode with transformers 4's clean_up_tokenization, as the organizers' script did")
    p.add_argument("--tie-margin", type=float, default=None, help="rerun a row alone when its two best logits come closer than this; None = 1e-3 in float32, off otherwise; 0 = off")
    p.add_argument("--baseline", default=None, help="a scores.json (or its folder) to compare with: prints and writes comparison.md / comparison.json; None = no comparison")
    p.add_argument("--overwrite", action="store_true", help="replace existing scores.json / predictions.csv / comparison files in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        splits=args.splits, mia=args.mia, mmlu=args.mmlu, mmlu_shots=args.mmlu_shots, mmlu_limit=args.mmlu_limit,
        mmlu_subjects=tuple(args.mmlu_subjects or ()), mmlu_threshold=args.mmlu_threshold, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, limit=args.limit, prompt_format=args.prompt_format, clean_up_spaces=args.clean_up_spaces,
        tie_margin=args.tie_margin,
    )


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
