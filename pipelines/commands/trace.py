"""Causal tracing (ROME): find the layers that store the facts to forget, write layers.json.

Facts are the Task-2 QA rows of --data whose question names its person (default: the forget
set's train part; --split/--part pick others), or the {prompt, subject, answer} records of a
.json/.jsonl file. Kept are the facts the model answers (its greedy next token is the answer's
first token). For each, Gaussian noise on the subject's embeddings corrupts the run and the clean
hidden state / MLP / attention output is restored at every token and layer; the indirect effects
are averaged by token group and the best window of --select-k layers (MLP at the last subject
token by default) goes to DIR/layers.json. Also written: DIR/trace.json, DIR/aie.png and
DIR/heatmaps/*.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.config import FactSource, TraceStageConfig
from pipelines.options import add_model_options, model_options, quiet_progress
from tracing import settings
from tracing.config import SelectionConfig, TraceConfig
from tracing.io import check_output_dir, check_output_path

NAME = "trace"
HELP = "causal tracing: find the layers that store the facts, write layers.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's own options, then one per field of FactSource, TraceConfig, SelectionConfig
    (``--select-*``) and TraceStageConfig (:mod:`tracing.settings`)."""
    p.add_argument("--model", required=True, help="model folder (or Hub id) to trace")
    p.add_argument("--data", required=True, help="SemEval-layout data (folder or Hub id), or a .json/.jsonl file of {prompt, subject, answer} records")
    p.add_argument("--out", required=True, help="output folder for trace.json, layers.json, aie.png and heatmaps/")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier trace in --out")
    groups = settings.add_arguments(p, FactSource)
    settings.add_arguments(p, TraceConfig, groups=groups)
    settings.add_arguments(p, SelectionConfig, prefix="select_", groups=groups)
    settings.add_arguments(p, TraceStageConfig)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p)


def config_from_args(args: argparse.Namespace) -> TraceStageConfig:
    return TraceStageConfig(
        trace=TraceConfig(**settings.from_args(args, TraceConfig)),
        select=SelectionConfig(**settings.from_args(args, SelectionConfig, prefix="select_")),
        facts=FactSource(**settings.from_args(args, FactSource)),
        **settings.from_args(args, TraceStageConfig),
    ).check()


def run(args: argparse.Namespace) -> int:
    from pipelines.trace_stage import load_fact_file, run_trace
    from unlearn.data import load_semeval
    from unlearn.models import load_model

    config = config_from_args(args)
    if args.quiet:
        quiet_progress()
    out = Path(args.out)
    model_dir = Path(args.model)
    check_output_path(out, model_dir if model_dir.exists() else None, [Path(args.data)], what="the trace")
    check_output_dir(out, overwrite=args.overwrite, marker="trace.json", command="trace")
    data_path = Path(args.data)
    data = load_fact_file(data_path) if data_path.suffix in (".json", ".jsonl") and data_path.is_file() else load_semeval(args.data)
    model, tokenizer = load_model(args.model, model_options(args))
    outcome = run_trace(model, tokenizer, data, out, config, progress=not args.quiet, overwrite=args.overwrite, log=print)
    counts, te, sel = outcome.summary["counts"], outcome.summary["te"], outcome.selection
    skipped = ", ".join(f"{v} {k}" for k, v in counts.items() if k not in ("candidates", "kept", "traced") and v) or "none"
    print(f"facts: {counts['candidates']} candidates, {counts['kept']} kept, {counts['traced']} traced; skipped: {skipped}")
    print(f"average total effect {te['mean']:.3f} [95% CI {te['ci_low']:.3f}, {te['ci_high']:.3f}]; noise std {outcome.result.noise_std:.4g}")
    print(f"selected {sel.kind} layers {sel.layers} ({sel.method}, {sel.params['group'].replace('_', ' ')} token) of {sel.n_layers}")
    print(f"traced in {outcome.result.seconds:.1f} s ({config.trace.method}; suffix trick {'on' if outcome.result.suffix else 'off'}, "
          f"entering mid-stack {'on' if outcome.result.skip_layers else 'off'})")
    for kind, a in (outcome.summary.get("agreement") or {}).items():
        aie = "–" if a["aie"] is None else f"{a['aie']:.3f}"
        per_fact = "–" if a["per_fact"] is None else f"{a['per_fact']:.3f}"
        print(f"auto: the attribution screen ranks {kind} layers like exact tracing at {', '.join(config.trace.confirm)}: Spearman {aie} (AIE curve), {per_fact} (mean per fact)")
    for name, path in outcome.paths.items():
        print(f"wrote {path}")
    return 0
