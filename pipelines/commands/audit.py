"""Forgotten or only hidden? Attack an unlearned model and measure how much forget knowledge comes back.

Runs on --model (the unlearned model) and, as references, --reference-target (the model before
unlearning; its scores are the top of the recovery scale) and --retain-model (a model trained
without the forget rows: the never-seen floor; give it — without one every attack's recovery is an
upper bound):

  quantization   bf16; int8 per row, NF4 in blocks of 64, int4 in groups of 128 (torchao)
  relearning     --relearn-steps of full fine-tuning on half the forget rows (scored on the other
                 half), on retain rows the audit does not score, on never-seen biographies
  probes         the forget questions re-worded; other people's QA before each forget prompt
  logit lens     the forget answers' first-token probability read from every layer

and scores each with SemEval's metrics on --data (a request in the organizers' layout): forget and
retain knowledge (QA exact match) and regurgitation (ROUGE-L), and the forget documents'
membership AUC. Recovery per forget metric = (attacked − base) / (target − base), base = the
unlearned level or, where higher, the retain model's under the same attack.
Writes OUT/audit.json, OUT/audit.md, OUT/recovery.png and OUT/logit_lens.png. docs/audit.md has
the definitions and the measurements.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.options import add_model_options, model_options, quiet_progress

NAME = "audit"
HELP = "attack an unlearned model (quantization, relearning, paraphrase and context probes, logit lens) and measure how much forget knowledge comes back"
OUTPUTS = ("audit.json", "audit.md", "recovery.png", "logit_lens.png")
EVAL_FIELDS = ("splits", "mia", "prompt_format")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tracing import settings
    from unlearn.audit.config import AuditConfig
    from unlearn.eval.config import EvalConfig

    p.add_argument("--model", required=True, help="the unlearned model's folder (or Hub id)")
    p.add_argument("--reference-target", required=True, help="the target: the model before unlearning (its forget scores are full recovery)")
    p.add_argument("--retain-model", default=None, help="a model trained without the forget rows (e.g. make-target --train-on retain), attacked as the never-seen floor: "
                   "recovery counts only what rises above it under the same attack (default: none, recovery is an upper bound)")
    p.add_argument("--data", required=True, help="the unlearning request: a folder in the SemEval organizers' layout (data/, mia_data/)")
    p.add_argument("--out", required=True, help="folder for audit.json, audit.md and the figures (created if needed)")
    settings.add_arguments(p, AuditConfig)
    settings.add_arguments(p, EvalConfig, exclude=_not_audit_fields())
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from pipelines.audit import print_audit, write_audit
    from pipelines.semeval.audit import SemEvalAudit
    from tracing import settings
    from tracing.io import check_output_path
    from unlearn.audit import AuditConfig, run_audit
    from unlearn.eval.config import EvalConfig
    from unlearn.eval.report import check_outputs
    from unlearn.models import load_model

    config = AuditConfig(**settings.from_args(args, AuditConfig))
    config.check()
    evaluate = EvalConfig(**settings.from_args(args, EvalConfig, exclude=_not_audit_fields()))
    evaluate.check()
    out = Path(args.out)
    models = {"unlearned": args.model, "target": args.reference_target, **({"retain": args.retain_model} if args.retain_model else {})}
    for path in models.values():
        check_output_path(out, Path(path) if Path(path).exists() else None, [Path(args.data)], what="the audit")
    check_outputs(out, overwrite=args.overwrite, names=OUTPUTS)
    task = SemEvalAudit(args.data, evaluate, seed=config.seed)  # bad data fails before any model is loaded
    if args.quiet:
        quiet_progress()
    options = model_options(args)
    audit = run_audit(models, task, config, load=lambda path: load_model(path, options), layers=_unlearned_layers(args.model),
                      log=(lambda m: None) if args.quiet else print)
    write_audit(out, audit)
    print_audit(audit)
    print(f"wrote {out / 'audit.json'}, {out / 'audit.md'} and the figures")
    return 0


def _not_audit_fields() -> tuple[str, ...]:
    """The EvalConfig fields the audit does not read (it scores with its own generation budget and no MMLU)."""
    import dataclasses

    from unlearn.eval.config import EvalConfig

    return tuple(f.name for f in dataclasses.fields(EvalConfig) if f.name not in EVAL_FIELDS)


def _unlearned_layers(model: str) -> list[int] | None:
    """The layers ``amnesia unlearn`` trained (its unlearn.json beside the model), shaded in the logit-lens figure."""
    import json

    path = Path(model) / "unlearn.json"
    if not path.is_file():
        return None
    try:
        layers = json.loads(path.read_text(encoding="utf-8")).get("layers")
    except (OSError, ValueError):
        return None
    return layers if isinstance(layers, list) else None
