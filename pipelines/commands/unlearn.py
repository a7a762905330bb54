"""Constrained unlearning: train only the chosen layers' modules to forget the forget set.

Every parameter is frozen except the --kind modules (mlp, attn, or the whole layer) of the
--layers (a range 0-5, a list 0,1,2,7, all, a layers.json from `amnesia trace`, or auto = trace
first). Each optimizer step sees a forget micro-batch and a retain micro-batch (output tokens
only); one epoch is one pass over the forget set. Methods: sha256 (the paper: -CE_forget +
alpha*CE_retain with the adaptive alpha), ga, gd, kl, npo (the shared task's baselines).
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
from unlearn.config import UnlearnConfig
from unlearn.methods import describe_methods

NAME = "unlearn"
HELP = "unlearn the forget set by training only the selected layers"


def auto_or_number(text: str) -> str | float:
    """``auto`` or a number (argparse type of ``--lr`` and ``--epochs``)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None


def parse_method_args(pairs: list[str]) -> dict:
    """``["KEY=VALUE", …]`` → a mapping, each value read as YAML (``0.5`` a number, ``true`` a bool), as in a run config."""
    from pipelines.typed import load_yaml_text

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AmnesiaError(f"--method-arg {pair!r}: expected KEY=VALUE (a field of the method's Settings)")
        out[key.strip()] = load_yaml_text(value, f"--method-arg {key.strip()}") if value.strip() else value
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = UnlearnConfig()
    p.add_argument("--model", required=True, help="input model folder (or Hub id): the model to unlearn from")
    p.add_argument("--data", required=True, help="SemEval-layout data (folder or Hub id); its forget_train and retain_train splits are used")
    p.add_argument("--out", required=True, help="output model folder (not inside the input model or the data)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (and checkpoints of an earlier run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-step log lines")

    g = p.add_argument_group("what trains")
    g.add_argument("--method", default=d.method, help=f"the unlearning method, one of the registered ones (unlearn.methods; a typo names the nearest): {describe_methods()}")
    g.add_argument("--layers", default=d.layers, help="all, a range (0-5), a list (0,1,2,7), a layers.json (or a trace folder holding one), or auto (run `amnesia trace` first and use its selection)")
    g.add_argument("--kind", default=d.kind, choices=("auto", "mlp", "attn", "all"), help="modules to train in those layers; auto = the layers.json's kind when mlp/attn, else mlp; all = the whole layer")
    g.add_argument("--lora", action="store_true", help="train LoRA adapters on the selected modules' linear layers instead of their weights (merged into the output)")
    g.add_argument("--lora-r", type=int, default=d.lora_r, help="LoRA rank")
    g.add_argument("--lora-alpha", type=int, default=d.lora_alpha, help="LoRA scaling alpha")
    g.add_argument("--lora-dropout", type=float, default=d.lora_dropout, help="LoRA dropout")
    g.add_argument("--trace-dir", default=None, help="with --layers auto: where the trace is written (default: OUT.trace beside the output)")
    g.add_argument("--trace-max-facts", type=int, default=None, help="with --layers auto: trace at most this many facts (default: all the forget set's)")
    g.add_argument("--trace-samples", type=int, default=TraceConfig().samples, help="with --layers auto: noise draws per fact")
    g.add_argument("--trace-method", default="auto", choices=TRACE_METHODS,
                   help="with --layers auto: auto screens every cell with attribution patching and traces the last subject token exactly (the layers selection reads, so the same selection as exact at a fraction of the cost); exact traces every token")
    g.add_argument("--trace-k", type=int, default=SelectionConfig().k, help="with --layers auto: layers in the selected window; default: 3/8 of the model's layers, only those whose AIE is distinguishable from 0")

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=auto_or_number, default=d.epochs, help="passes over the forget set; auto = --budget-factor × the epochs the step size needs to reach the never-seen level (validation and --patience stop earlier)")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many optimizer steps (overrides --epochs when > 0)")
    g.add_argument("--lr", type=auto_or_number, default=d.lr, help="learning rate (AdamW); auto = probe the model on the validation rows for the rate that brings the forget rows to the never-seen level in --reach-epochs epochs (docs/step-size.md)")
    g.add_argument("--reach-epochs", type=float, default=d.reach_epochs, help="--lr auto: epochs in which the chosen rate should bring the forget rows to the never-seen level")
    g.add_argument("--budget-factor", type=float, default=d.budget_factor, help="--epochs auto: train this many times as long as reaching the level takes")
    g.add_argument("--probe-steps", type=int, default=d.probe_steps, help="--lr auto: optimizer steps of each probe")
    g.add_argument("--hold-factor", type=float, default=d.hold_factor, help="once the watched validation forget rows are at their never-seen level, multiply the rate by this (1 = keep it)")
    g.add_argument("--lr-scheduler", default=d.lr_scheduler, help="transformers scheduler name: linear, constant, cosine, ...")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="learning-rate warmup steps")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="forget rows (and as many retain rows) per micro-batch and device")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches accumulated per optimizer step")
    g.add_argument("--max-length", type=int, default=d.max_length, help="truncate examples to this many tokens (a warning counts truncated rows)")
    g.add_argument("--schedule", default=d.schedule, choices=("joint", "sequential"), help="joint: every epoch shuffles the whole forget set; sequential: --epochs passes over one chunk of forget rows, then the next chunk")
    g.add_argument("--chunk-size", type=int, default=d.chunk_size, help="sequential schedule: forget rows per chunk (in data order)")
    g.add_argument("--retain-ratio", type=int, default=d.retain_ratio, help="retain rows per forget row in each micro-batch")
    g.add_argument("--group-by-length", action="store_true", help="joint schedule: sort the rows of each optimizer step by length into its micro-batches (same rows per step, far less padding; off = the paper's random micro-batches)")
    g.add_argument("--prompt-format", default=d.prompt_format, choices=("raw", "chat"), help="raw = input + output as they are (how the SemEval targets were fine-tuned and scored); chat = the input wrapped in the tokenizer's chat template; use the format the target was trained and will be scored with")
    g.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (the paper's setting on GPUs)")
    g.add_argument("--fp16", action="store_true", help="float16 mixed precision")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass to save memory")
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="gradient clipping norm (0 = off)")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (data order, LoRA init); same seed, same run on CPU")

    g = p.add_argument_group("method parameters")
    g.add_argument("--alpha-variant", default=d.alpha_variant, choices=("paper", "code"), help="sha256 alpha schedule: paper (clip to [alpha-min, 2.8]) or the authors' code (clip at 2.3, round to 0.1)")
    g.add_argument("--alpha-a", type=float, default=d.alpha_a, help="sha256: a in alpha = a*b^(CE_retain - L_ref) + c")
    g.add_argument("--alpha-b", type=float, default=d.alpha_b, help="sha256: b in alpha = a*b^(CE_retain - L_ref) + c")
    g.add_argument("--alpha-c", type=float, default=d.alpha_c, help="sha256: c in alpha = a*b^(CE_retain - L_ref) + c")
    g.add_argument("--alpha-min", type=float, default=d.alpha_min, help="sha256: lowest alpha (and alpha during the first epoch)")
    g.add_argument("--alpha-max", type=float, default=d.alpha_max, help="sha256: highest alpha; default 2.8 (paper) or 2.3 (code variant)")
    g.add_argument("--npo-beta", type=float, default=d.npo_beta, help="npo: inverse temperature beta")
    g.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of a plug-in method's own Settings dataclass (repeatable; unlearn.method_args in a run config); "
                        "the built-in methods take theirs from the options above")

    g = p.add_argument_group("calibrated forgetting (aim at never-seen text, not at infinity)")
    g.add_argument("--forget-target", default=d.forget_target, help="per-token NLL at which a forget row stops being pushed: auto = the --forget-quantile of never-seen reference documents' NLL under the model (DATA/mia_data/validation/nonmember.jsonl or --forget-reference; uncalibrated with a warning when there are none), none = push without limit, or a number")
    g.add_argument("--forget-reference", default=d.forget_reference, help="never-seen reference documents for --forget-target auto: a .jsonl with a 'document' per line, or a folder holding nonmember.jsonl; default DATA/mia_data/validation/nonmember.jsonl (never the test MIA files)")
    g.add_argument("--forget-quantile", type=float, default=d.forget_quantile, help="quantile of the reference NLLs used as the level (0.5 = median: a forget document held there ranks like a never-seen one, AUC 0.5)")
    g.add_argument("--forget-spread", action=argparse.BooleanOptionalAction, default=d.forget_spread,
                   help="each forget row aims at its own quantile of the reference NLLs, spread evenly over (0, 1), so the forgotten rows end distributed like never-seen text instead of piled at one level (which membership inference against another sample of never-seen text sees); --no-forget-spread: every row at --forget-quantile")
    g.add_argument("--forget-mode", default=d.forget_mode, choices=("pull", "stop"), help="pull = rows past the level are pulled back to it (two-sided); stop = they only stop being pushed")
    g.add_argument("--forget-update-steps", type=int, default=d.forget_update_steps, help="measure the level again every N optimizer steps on the current model (what an auditor compares with); 0 = once, before training")
    g.add_argument("--forget-tokens", default=d.forget_tokens, choices=("all", "documents", "output"), help="tokens of a forget row the forget term covers: all = prompt and output of every row (the whole text, as membership inference reads a document); documents = the whole text of sentence-completion rows, the answer of question rows; output = the answer only (the paper)")
    g.add_argument("--forget-eos", action=argparse.BooleanOptionalAction, default=d.forget_eos, help="include the EOS after a forget answer in the forget term (pushing it down makes the model stop ending its answers)")

    g = p.add_argument_group("validation during training (checkpoint selection)")
    g.add_argument("--splits", default=",".join(d.splits), help="parts of the data unlearning reads, forget and retain alike: train,validation (the validation rows and members are then forgotten / kept like the train ones, so validating on them means something; the test reports the train part) or train")
    g.add_argument("--eval-steps", type=int, default=d.eval_steps, help="every N optimizer steps (and at the end) score the validation part — knowledge and regurgitation on --eval-rows forget/retain validation rows, MIA AUC on DATA/mia_data/validation/ (never the test MIA files) — and keep the best step's weights; 0 = off")
    g.add_argument("--eval-rows", type=int, default=d.eval_rows, help="validation rows per split (forget, retain) scored each time; a seeded subset")
    g.add_argument("--select-by", default=d.select_by, choices=("final", "mia", "task"), help="what the kept checkpoint maximizes: final = mean of the task aggregate and the MIA score (the official final score without MMLU), mia = the MIA score, task = the task aggregate")
    g.add_argument("--patience", type=int, default=d.patience, help="stop after this many validations without improvement (0 = never stop early)")

    g = p.add_argument_group("checkpoints and logging")
    g.add_argument("--save-steps", type=int, default=d.save_steps, help="write a checkpoint every N optimizer steps (0 = none)")
    g.add_argument("--save-total-limit", type=int, default=d.save_total_limit, help="keep at most this many complete checkpoints")
    g.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: OUT.checkpoints beside the output)")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoints after a successful run (default: removed)")
    g.add_argument("--resume", action="store_true", help="continue the interrupted run from its newest complete checkpoint (same settings)")
    g.add_argument("--logging-steps", type=int, default=d.logging_steps, help="log loss, CE_forget, CE_retain and alpha every N steps")
    g.add_argument("--report-to", default=",".join(d.report_to), help="comma-separated trackers: none, tensorboard, wandb, ...")
    add_model_options(p)


def config_from_args(args: argparse.Namespace, layers: str | None = None) -> UnlearnConfig:
    config = UnlearnConfig(
        method=args.method,
        layers=layers if layers is not None else args.layers,
        kind=args.kind,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        reach_epochs=args.reach_epochs,
        budget_factor=args.budget_factor,
        probe_steps=args.probe_steps,
        hold_factor=args.hold_factor,
        lr_scheduler=args.lr_scheduler,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        schedule=args.schedule,
        chunk_size=args.chunk_size,
        retain_ratio=args.retain_ratio,
        group_by_length=args.group_by_length,
        prompt_format=args.prompt_format,
        bf16=args.bf16,
        fp16=args.fp16,
        gradient_checkpointing=args.gradient_checkpointing,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        alpha_variant=args.alpha_variant,
        alpha_a=args.alpha_a,
        alpha_b=args.alpha_b,
        alpha_c=args.alpha_c,
        alpha_min=args.alpha_min,
        alpha_max=args.alpha_max,
        npo_beta=args.npo_beta,
        method_args=parse_method_args(args.method_arg),
        forget_target=args.forget_target,
        forget_reference=args.forget_reference,
        forget_quantile=args.forget_quantile,
        forget_spread=args.forget_spread,
        forget_mode=args.forget_mode,
        forget_update_steps=args.forget_update_steps,
        forget_tokens=args.forget_tokens,
        forget_eos=args.forget_eos,
        splits=[x.strip() for x in args.splits.split(",") if x.strip()],
        eval_steps=args.eval_steps,
        eval_rows=args.eval_rows,
        select_by=args.select_by,
        patience=args.patience,
        lora=args.lora,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        keep_checkpoints=args.keep_checkpoints,
        report_to=[r.strip() for r in args.report_to.split(",") if r.strip()] or ["none"],
    )
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
