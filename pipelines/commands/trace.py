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

from pipelines.options import add_model_options, model_options, quiet_progress
from pipelines.config import FactSource, TraceStageConfig
from tracing.config import METHODS, TOKEN_GROUPS, SelectionConfig, TraceConfig
from tracing.io import check_output_dir, check_output_path

NAME = "trace"
HELP = "causal tracing: find the layers that store the facts, write layers.json"


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    t, s, f = TraceConfig(), SelectionConfig(), FactSource()
    p.add_argument("--model", required=True, help="model folder (or Hub id) to trace")
    p.add_argument("--data", required=True, help="SemEval-layout data (folder or Hub id), or a .json/.jsonl file of {prompt, subject, answer} records")
    p.add_argument("--out", required=True, help="output folder for trace.json, layers.json, aie.png and heatmaps/")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier trace in --out")
    g = p.add_argument_group("facts")
    g.add_argument("--split", default=f.split, choices=("forget", "retain", "all"), help="which set's QA rows become facts")
    g.add_argument("--part", default=f.part, choices=("train", "validation"), help="which part of the set")
    g.add_argument("--tasks", default=",".join(f.tasks), help="comma-separated task names whose QA rows are used")
    g.add_argument("--rephrase", action="store_true", help="ask the paper's rephrasing \"What is SUBJECT's RELATION?\" instead of the row's question")
    g.add_argument("--max-facts", type=int, default=None, help="trace at most this many kept facts (the first in data order); default all")
    g.add_argument("--max-tokens", type=int, default=t.max_tokens, help="skip prompts longer than this many tokens")
    g = p.add_argument_group("tracing")
    g.add_argument("--method", default=t.method, choices=METHODS,
                   help="exact: ROME's causal tracing of every token and layer; attribution: the attribution-patching estimate of every cell (one backward per fact); "
                        "auto: the estimate everywhere and exact tracing at the --confirm tokens (the group layer selection reads), with how well the two agree")
    g.add_argument("--confirm", default=",".join(t.confirm), help="with --method auto: comma-separated token groups traced exactly (--select-group is always added)")
    g.add_argument("--kinds", default=",".join(t.kinds), help="comma-separated sites to restore: hidden (residual stream), mlp, attn")
    g.add_argument("--samples", type=int, default=t.samples, help="noise draws per fact")
    g.add_argument("--noise", default=str(t.noise), help="noise std: sN = N × the std of the subject-token embeddings over the facts, or a number")
    g.add_argument("--window", type=int, default=t.window, help="MLP/attention layers restored together around each layer (ROME's window)")
    g.add_argument("--batch-size", type=int, default=None, help="rows (restorations × samples) per forward pass; default: as many as --memory-mb allows")
    g.add_argument("--memory-mb", type=int, default=None, help="activation memory per forward pass used to size batches; default 1024 on CPU, half the free GPU memory")
    g.add_argument("--seed", type=int, default=t.seed, help="noise seed; same seed, same trace")
    g.add_argument("--no-suffix", action="store_true", help="run full sequences for every restoration instead of reusing the corrupted prefix (slower, for checking)")
    g.add_argument("--no-skip-layers", action="store_true", help="run every layer for every restoration instead of entering the stack at the first restored layer (slower, for checking)")
    g.add_argument("--keep-dtype", action="store_true", help="trace a 16-bit model in its own dtype instead of float32 (the cast is undone exactly afterwards either way)")
    g = p.add_argument_group("layer selection")
    g.add_argument("--select-mode", default=s.mode, choices=("window", "threshold"), help="best contiguous window of --select-k layers, or every layer above --select-fraction of the maximum")
    g.add_argument("--select-k", type=int, default=s.k, help="layers in the selected window (clipped to the model's depth); default: --select-depth-fraction of the layers")
    g.add_argument("--select-depth-fraction", type=float, default=s.depth_fraction, help="without --select-k: the window is this fraction of the layers, rounded (3/8 = the paper's 6 of OLMo-1B's 16)")
    g.add_argument("--select-evidence", action=argparse.BooleanOptionalAction, default=s.evidence, help="keep only the window's layers whose AIE 95%% interval is above 0 (all of them, with a warning, when none is)")
    g.add_argument("--select-fraction", type=float, default=s.fraction, help="threshold mode: keep layers with AIE >= this fraction of the largest")
    g.add_argument("--select-kind", default=s.kind, choices=("mlp", "attn", "hidden"), help="which traced kind's AIE selects layers")
    g.add_argument("--select-group", default=s.group, choices=("auto", *TOKEN_GROUPS),
                   help="which token group's AIE selects layers; auto = each subject token group (first, last) selects on its own and the one with the largest AIE among those with evidence wins")
    p.add_argument("--heatmaps", type=int, default=TraceStageConfig().heatmaps, help="write heatmaps for this many facts")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p)


def config_from_args(args: argparse.Namespace) -> TraceStageConfig:
    noise: str | float = args.noise
    trace = TraceConfig(
        kinds=_kinds(args.kinds), samples=args.samples, noise=noise, window=args.window, seed=args.seed, method=args.method,
        batch_size=args.batch_size, memory_mb=args.memory_mb, max_tokens=args.max_tokens, suffix=not args.no_suffix,
        skip_layers=not args.no_skip_layers, confirm=_kinds(args.confirm), float32=not args.keep_dtype,
    )
    select = SelectionConfig(mode=args.select_mode, k=args.select_k, fraction=args.select_fraction, kind=args.select_kind, group=args.select_group,
                             depth_fraction=args.select_depth_fraction, evidence=args.select_evidence)
    facts = FactSource(split=args.split, part=args.part, tasks=_kinds(args.tasks), rephrase=args.rephrase, max_facts=args.max_facts)
    return TraceStageConfig(trace=trace, select=select, facts=facts, heatmaps=args.heatmaps).check()


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
