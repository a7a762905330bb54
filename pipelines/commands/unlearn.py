"""Constrained unlearning: train only the chosen layers' modules to forget the forget set.

Every parameter is frozen except the --kind modules (mlp, attn, or the whole layer) of the
--layers (a range 0-5, a list 0,1,2,7, all, a layers.json from `amnesia trace`, or auto = trace
first). Each optimizer step sees a forget micro-batch and a retain micro-batch (output tokens
only); one epoch is one pass over the forget set. Methods: sha256 (the paper: -CE_forget +
alpha*CE_retain with the adaptive alpha), ga, gd, kl, npo (the shared task's baselines), simnpo,
wga, satimp, ceu, undial, pdu, rmu, idkdpo (the methods researchers compare against;
docs/unlearning.md).
Writes a standard model folder (safetensors, config, tokenizer) with unlearn.json, atomically.
Batch defaults are the paper's for OLMo-1B/7B (batch 12 x accumulation 10; add --bf16 on GPUs);
the learning rate and the epochs are measured (--lr auto, --epochs auto: a short probe on the
validation rows; the paper's fixed rate was 1.5e-5 for 8 epochs). Training keeps float32
weights unless --dtype says otherwise; the output is saved in the input model's dtype. Multi-GPU: accelerate launch --config_file
configs/accelerate/multi_gpu.yaml -m pipelines.cli unlearn ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.options import add_model_options, model_options, quiet_progress
from tracing.config import METHODS as TRACE_METHODS, SelectionConfig, TraceConfig
from tracing.errors import AmnesiaError
from tracing import settings
from unlearn.config import GROUPS, UnlearnConfig

NAME = "unlearn"
HELP = "unlearn the forget set by training only the selected layers"


def parse_method_args(pairs: list[str]) -> dict:
    """``["KEY=VALUE", …]`` → a mapping, each value read as YAML (``0.5`` a number, ``true`` a bool), as in a run config."""
    from tracing.settings import load_yaml_text

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AmnesiaError(f"--method-arg {pair!r}: expected KEY=VALUE (a field of the method's Settings)")
        out[key.strip()] = load_yaml_text(value, f"--method-arg {key.strip()}") if value.strip() else value
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="input model folder (or Hub id): the model to unlearn from")
    p.add_argument("--data", required=True, help="SemEval-layout data (folder or Hub id); its forget_train and retain_train splits are used")
    p.add_argument("--out", required=True, help="output model folder (not inside the input model or the data)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (and checkpoints of an earlier run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-step log lines")
    groups = settings.add_arguments(p, UnlearnConfig, titles=GROUPS)  # one option per UnlearnConfig field, its help from the field

    g = groups["train"]
    g.add_argument("--trace-dir", default=None, help="with --layers auto: where the trace is written (default: OUT.trace beside the output)")
    g.add_argument("--trace-max-facts", type=int, default=None, help="with --layers auto: trace at most this many facts (default: all the forget set's)")
    g.add_argument("--trace-samples", type=int, default=TraceConfig().samples, help="with --layers auto: noise draws per fact")
    g.add_argument("--trace-method", default="auto", choices=TRACE_METHODS,
                   help="with --layers auto: auto screens every cell with attribution patching and traces the last subject token exactly (the layers selection reads, so the same selection as exact at a fraction of the cost); exact traces every token")
    g.add_argument("--trace-k", type=int, default=SelectionConfig().k, help="with --layers auto: layers in the selected window; default: 3/8 of the model's layers, only those whose AIE is distinguishable from 0")
    groups["method"].add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                                  help="a setting of a plug-in method's own Settings dataclass (repeatable; unlearn.method_args in a run config); "
                                       "the built-in methods take theirs from the options above")
    g = groups["checkpoints"]
    g.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: OUT.checkpoints beside the output)")
    g.add_argument("--resume", action="store_true", help="continue the interrupted run from its newest complete checkpoint (same settings)")
    add_model_options(p)


def config_from_args(args: argparse.Namespace, layers: str | None = None) -> UnlearnConfig:
    values = settings.from_args(args, UnlearnConfig)
    values["report_to"] = values["report_to"] or ["none"]
    config = UnlearnConfig(**{**values, "layers": layers if layers is not None else args.layers, "method_args": parse_method_args(args.method_arg)})
    config.check()
    return config


def _trace_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    return Path(args.trace_dir) if args.trace_dir else out.parent / f"{out.name}.trace"


def _trace_first(args: argparse.Namespace) -> str:
    """``--layers auto``: run the tracing stage (ROME's defaults, only the kind that trains); return its layers.json path.

    With ``--resume`` a complete trace of the interrupted run (its folder is written atomically,
    so ``layers.json`` in it means complete) is reused instead of tracing again.
    """
    from pipelines.trace_stage import FactSource, TraceStageConfig, run_trace
    from unlearn.data import load_semeval
    from unlearn.models import load_model

    trace_dir = _trace_dir(args)
    if args.resume and (trace_dir / "layers.json").is_file():
        print(f"trace: reusing {trace_dir / 'layers.json'} of the interrupted run", file=sys.stderr)
        return str(trace_dir / "layers.json")
    data = load_semeval(args.data)
    model, tok = load_model(args.model, model_options(args))
    kind = args.kind if args.kind in ("mlp", "attn") else "mlp"  # trace only the kind that will train
    stage = TraceStageConfig(
        trace=TraceConfig(kinds=(kind,), samples=args.trace_samples, method=args.trace_method),
        select=SelectionConfig(k=args.trace_k, kind=kind),
        facts=FactSource(max_facts=args.trace_max_facts),
    )
    outcome = run_trace(model, tok, data, trace_dir, stage, progress=not args.quiet, overwrite=args.overwrite, log=lambda m: print(m, file=sys.stderr))
    del model
    print(f"trace: layers {outcome.selection.layers} ({outcome.selection.kind}) → {outcome.paths['layers']}", file=sys.stderr)
    return str(outcome.paths["layers"])


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is when they are emitted (notebooks and tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _check_paths(args: argparse.Namespace) -> None:
    """Every output check before any work (tracing included): nothing is written on a bad path."""
    from unlearn.api import check_output_path, check_outputs, default_checkpoint_dir

    check_outputs(args.out, args.model, [args.data], overwrite=args.overwrite, resume=args.resume,
                  checkpoint_dir=args.checkpoint_dir or default_checkpoint_dir(args.out))
    if args.layers == "auto":
        from tracing.io import check_output_dir

        trace_dir = _trace_dir(args)
        model_dir = Path(args.model)
        check_output_path(trace_dir, model_dir if model_dir.exists() else None, [Path(args.data)], what="the trace")
        if not (args.resume and (trace_dir / "layers.json").is_file()):
            check_output_dir(trace_dir, overwrite=args.overwrite, marker="trace.json", command="trace")


def run(args: argparse.Namespace) -> int:
    from unlearn.api import default_checkpoint_dir, describe_plan, run_unlearning
    from unlearn.step_size import StepPlan

    log = logging.getLogger("unlearn")
    if not log.handlers:
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    if args.quiet:
        quiet_progress()
    if args.resume and args.overwrite:
        raise AmnesiaError("--resume and --overwrite contradict each other: --resume continues the checkpoints, --overwrite discards them")
    config = config_from_args(args, layers="0" if args.layers == "auto" else None)  # validate before tracing
    _check_paths(args)
    if args.layers == "auto":
        config = config_from_args(args, layers=_trace_first(args))
    manifest = run_unlearning(
        args.model,
        args.data,
        args.out,
        config,
        model_options=model_options(args),
        overwrite=args.overwrite,
        resume=args.resume,
        checkpoint_dir=args.checkpoint_dir or default_checkpoint_dir(args.out),
        progress=not args.quiet,
    )
    p = manifest["parameters"]
    print(f"method {manifest['method']}: {p['kind']} of layers {manifest['layers']}, {p['trainable_parameters']:,} of {p['total_parameters']:,} parameters trainable ({100 * p['trainable_share']:.2f}%)")
    for row in manifest["per_epoch"]:
        cells = " ".join(f"{k} {row[k]:.4g}" for k in ("loss", "ce_forget", "ce_retain", "alpha", "kl_retain", "npo") if k in row)
        print(f"epoch {row['epoch']}: {cells}")
    target = manifest.get("forget_target") or {}
    if target.get("level") is not None:
        levels = target.get("levels") or [[0, target["level"]]]
        print(f"forget target: per-token NLL {levels[0][1]:.3f} at the start, {levels[-1][1]:.3f} at the end ({target['source']})")
    validation = manifest.get("validation")
    if validation and validation.get("best"):
        b = validation["best"]
        cells = ", ".join(f"{k} {b[k]:.3f}" for k in ("final", "task", "mia_auc", "forget_knowledge", "retain_knowledge") if isinstance(b.get(k), (int, float)))
        print(f"kept step {validation['best_step']} of {manifest['steps']} (best {validation['select_by']} on validation: {cells})"
              + ("; stopped early" if validation.get("stopped_early") else ""))
    plan = manifest.get("step_size") or {}
    if plan:
        print(f"step size: {describe_plan(StepPlan.from_dict(plan))}")
    result = manifest.get("outcome") or {}
    if result.get("note"):
        print(f"note: {result['note']}")
    print(f"steps {manifest['steps']}, {manifest['wall_time_s']:.1f} s; wrote {args.out}")
    return 0
