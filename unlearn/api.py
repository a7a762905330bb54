"""The unlearning stage's Python API.

* :func:`unlearn_model` — in memory: a model, its tokenizer, forget rows, retain rows and an
  :class:`~unlearn.trainer.UnlearnConfig` → the unlearned model (LoRA merged) and a report;
* :func:`run_unlearning` — files: a model folder, SemEval-layout data and an output folder →
  a standard HF model folder (safetensors, config, tokenizer) + ``unlearn.json``, written
  atomically, with checkpoints beside it and ``resume``.

Both take the same :class:`UnlearnConfig` as the ``amnesia unlearn`` command.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import datasets
import torch

from tracing.errors import AmnesiaError
from tracing.io import atomic_path, check_output_dir, check_output_path, write_json

from .calibration import resolve_forget_target
from .eval.validation import ValidationSet, unlearning_validation_set
from .selection import CheckpointSelector
from .step_size import FIRST_RATE, ArrivalWatch, StepPlan, outcome, plan_steps, probe_sample, row_nll
from .data import SemEvalData, load_semeval, row_kind
from .dataset import Encoded, PairedCollator, PairedDataset, encode_rows, encode_split
from .models import ModelOptions, load_model, model_id, resolve_device
from .params import apply_lora, format_layers, num_layers, parse_layers, resolve_kind, select_parameters
from .config import UnlearnConfig
from .methods import get_method
from .trainer import UnlearnTrainer, latest_checkpoint, list_checkpoints

logger = logging.getLogger(__name__)

SCHEMA = 1
MANIFEST = "unlearn.json"


@dataclass
class UnlearnRun:
    """What :func:`train_unlearning` leaves: the trainer (model inside) and the report."""

    trainer: UnlearnTrainer
    report: dict

    @property
    def model(self):
        return self.trainer.accelerator.unwrap_model(self.trainer.model)


def _versions(lora: bool) -> dict[str, str]:
    import accelerate
    import transformers

    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("selective-amnesia")
    except PackageNotFoundError:  # running from a source tree without installing
        ours = "unknown"
    out = {
        "selective-amnesia": ours,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }
    if lora:
        import peft

        out["peft"] = peft.__version__
    return out


def _training_arguments(config: UnlearnConfig, output_dir: str, device: torch.device, progress: bool):
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=1.0 if config.epochs == "auto" else config.epochs,  # epochs/lr auto: set by the step plan before training
        max_steps=config.max_steps,
        learning_rate=FIRST_RATE if config.lr == "auto" else config.lr,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=config.bf16,
        fp16=config.fp16,
        logging_steps=config.logging_steps,
        logging_nan_inf_filter=False,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=None,  # the trainer rotates, counting only complete checkpoints
        report_to=list(config.report_to),
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_drop_last=False,
        disable_tqdm=not progress,
        use_cpu=device.type == "cpu",
    )
    if config.gradient_checkpointing:
        key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
        kwargs[key] = True
        kwargs[f"{key}_kwargs"] = {"use_reentrant": False}
    try:
        return TrainingArguments(**kwargs)
    except ValueError as exc:
        raise AmnesiaError(f"training arguments: {str(exc).splitlines()[0]}") from None


def _reference_copy(model, config: UnlearnConfig):
    """A frozen copy of the initial model (methods with a ``reference``: kl, npo), in bf16/fp16 when training runs in it."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    if config.bf16:
        ref.to(torch.bfloat16)
    elif config.fp16:
        ref.to(torch.float16)
    return ref


def train_unlearning(
    model,
    tokenizer,
    forget: datasets.Dataset,
    retain: datasets.Dataset | None,
    config: UnlearnConfig = UnlearnConfig(),
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    callbacks: Sequence = (),
    progress: bool = True,
    device: str = "auto",
    data: SemEvalData | None = None,
    reference_documents: Sequence[str] | None = None,
    validation: ValidationSet | None = None,
) -> UnlearnRun:
    """Freeze, build the trainer and train; the model stays inside the returned trainer.

    ``forget`` / ``retain`` are SemEval-layout datasets (columns ``id, input, output``).
    ``config.forget_target="auto"`` calibrates the forget level on ``reference_documents`` (never-seen
    documents) or, without them, on ``data``'s validation non-members (see
    :mod:`unlearn.calibration`). ``config.eval_steps`` scores ``validation`` (default: built from
    ``data``'s validation part, :func:`unlearn.eval.validation.validation_set`) every N steps and
    returns the best step's weights (:mod:`unlearn.selection`). With
    ``checkpoint_dir`` and ``config.save_steps`` checkpoints are written there; ``resume``
    continues from the newest complete one. Most users want :func:`unlearn_model` or
    :func:`run_unlearning`; this is their shared core (it keeps the trainer for saving under
    ``accelerate launch``).
    """
    from transformers import set_seed

    config.check()
    started = time.time()
    set_seed(config.seed)
    dev = resolve_device(device)
    memory_reset = reset_peak_memory(dev)
    method = config.method
    needs_retain = get_method(method).needs_retain
    if needs_retain and (retain is None or len(retain) == 0):
        raise AmnesiaError(f"method {method}: needs retain rows (retain_train), but none were given")

    spec = parse_layers(config.layers, num_layers(model))  # a bad layer spec fails before any work
    if config.eval_steps and validation is None:
        if data is None:
            raise AmnesiaError("eval_steps is set but no validation data was given (pass data= or validation=)")
        validation = unlearning_validation_set(data, config)
    if validation is not None and config.eval_steps and config.select_by == "forgotten" and not any(
            r.get("split") == "forget" and row_kind(r.get("id")) == "qa" for r in validation.rows):
        raise AmnesiaError(f"select_by forgotten: {validation.source} has no forget validation questions (ids ending in qa<digit>); "
                           "the rule keeps the first step whose forget knowledge (the QA score) reaches the floor — use select_by final")
    if validation is not None and config.eval_steps and not validation.has_mia:
        if config.select_by == "mia":
            raise AmnesiaError(f"select_by mia: {validation.source} has no mia_data/validation/member.jsonl and nonmember.jsonl")
        logger.warning("validation: %s has no mia_data/validation/ documents; checkpoints are selected on the task aggregate alone", validation.source)
    kind = resolve_kind(config.kind, spec)
    encode = dict(max_length=config.max_length, prompt_format=config.prompt_format, add_eos=tokenizer.eos_token is not None)
    forget_enc = encode_split(tokenizer, forget, name="forget set", label_prompt=label_prompt_flags(forget, config.forget_tokens), label_eos=config.forget_eos, **encode)
    forget_enc = with_alternates(tokenizer, forget_enc, forget, config, encode)
    # The retain term covers the same tokens as the forget term: the text kept is measured like the text forgotten.
    retain_enc = encode_split(tokenizer, retain, name="retain set", label_prompt=label_prompt_flags(retain, config.forget_tokens), **encode) if needs_retain else None
    target = resolve_forget_target(model, tokenizer, config.forget_target, q=config.forget_quantile, data=data,
                                   reference=config.forget_reference, documents=reference_documents, progress=progress)
    if config.forget_target == "auto" and target.level is None:
        logger.warning("forget target: %s", target.source)
    elif target.level is not None:
        logger.info("forget target: per-token NLL %.4g (%s)", target.level, target.source)
    reference = _reference_copy(model, config) if get_method(method).reference and not config.lora else None
    if config.lora:
        model, selection = apply_lora(model, spec.layers, kind, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    else:
        selection = select_parameters(model, spec.layers, kind)

    tmp = None
    if checkpoint_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="amnesia-unlearn-")
        output_dir = tmp.name
        if config.save_steps:
            raise AmnesiaError("save_steps is set but there is no checkpoint folder (pass checkpoint_dir)")
    else:
        output_dir = str(checkpoint_dir)
    args = _training_arguments(config, output_dir, dev, progress)
    dataset = PairedDataset(
        forget_enc,
        retain_enc,
        seed=config.seed,
        schedule=config.schedule,
        chunk_size=config.chunk_size,
        passes=int(config.epochs) if config.schedule == "sequential" else 1,
        retain_ratio=config.retain_ratio,
        # one optimizer step over every process: batches of batch_size keys go round-robin to the processes
        group_size=config.batch_size * config.grad_accum * args.world_size if config.group_by_length else 0,
        batch_size=config.batch_size,
    )
    if reference is not None:
        reference.to(args.device)
    trainer = UnlearnTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PairedCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=list(callbacks),
        unlearn_config=config,
        reference_model=reference,
        progress=progress,
        forget_level=target.level,
        measure_forget_level=target.measure,
        forget_distribution=target.distribution,
        layers=spec.layers,
    )
    if trainer.is_fsdp_enabled and target.level is not None and config.forget_update_steps:
        raise AmnesiaError("forget_update_steps under FSDP is not supported (the level is measured on the whole model in each process); "
                           "pass --forget-update-steps 0 or use configs/accelerate/multi_gpu.yaml or deepspeed_zero2.yaml")
    if config.eval_steps:
        if trainer.is_fsdp_enabled:
            raise AmnesiaError("eval_steps under FSDP is not supported (generation needs the whole model on each process); use configs/accelerate/multi_gpu.yaml or deepspeed_zero2.yaml")
        trainer.selector = CheckpointSelector(trainer, validation, eval_steps=config.eval_steps, select_by=config.select_by, patience=config.patience,
                                             floor=config.select_floor or 0.0)
        trainer.add_callback(trainer.selector)
    if trainer.is_fsdp_enabled and "auto" in (config.lr, config.epochs):
        raise AmnesiaError("lr auto / epochs auto under FSDP is not supported (the probe needs the whole model in one process); "
                           "run once with configs/accelerate/multi_gpu.yaml or on one GPU and pass the rate and epochs it chose (unlearn.json step_size)")
    if config.lora and trainer.is_fsdp_enabled:
        raise AmnesiaError("--lora with FSDP is not supported (the adapters cannot be merged from shards); use configs/accelerate/multi_gpu.yaml or deepspeed_zero2.yaml")

    probe_f, probe_r, rows = probe_rows(tokenizer, forget_enc, retain_enc, data, config, encode)
    watch_before = row_nll(trainer.model, probe_f, trainer.data_collator, config.batch_size)
    spe = steps_per_epoch(len(forget_enc), config, args.world_size)
    if target.level is not None:
        trainer.arrival = ArrivalWatch(trainer, probe_f, watch_before, every=max(1, spe // 3), hold_factor=config.hold_factor)
        trainer.add_callback(trainer.arrival)
    resumed_from = None
    if resume:
        if checkpoint_dir is None:
            raise AmnesiaError("resume needs the checkpoint folder of the interrupted run")
        ckpt = latest_checkpoint(checkpoint_dir)
        if ckpt is None:
            raise AmnesiaError(f"{checkpoint_dir}: no complete checkpoint to resume from (a checkpoint is complete once it holds amnesia_state.json)")
        if trainer.args.should_save:
            for stale in list_checkpoints(checkpoint_dir)[1]:
                if checkpoint_step_of(stale) > checkpoint_step_of(ckpt):
                    shutil.rmtree(stale, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer.load_unlearn_state(ckpt)
        resumed_from = str(ckpt)
        logger.info("resuming from %s", ckpt)
    plan = trainer.step_plan
    if plan is None:
        plan = _broadcast(trainer, lambda: plan_steps(trainer, probe_f, probe_r, level=target.level, steps_per_epoch=spe, rows=rows, forget_before=watch_before))
        trainer.step_plan = plan
    apply_plan(trainer.args, plan, config)
    if plan.lr_source == "auto" or plan.epochs_source == "auto":
        logger.info("step size: %s", describe_plan(plan))
    if plan.note:
        logger.warning("step size: %s", plan.note)
    try:
        output = trainer.train(resume_from_checkpoint=resumed_from)
    finally:
        if tmp is not None:
            tmp.cleanup()

    if trainer.selector is not None and trainer.stop_reason is None:
        trainer.selector.restore_best()
    best = (trainer.selector.report().get("best") or {}) if trainer.selector is not None else {}
    result = outcome(watch_before, row_nll(trainer.model, probe_f, trainer.data_collator, config.batch_size),
                     target.level, trainer.forget_level, validation_auc=best.get("mia_auc"), lr=plan.lr)
    if result["note"]:
        logger.warning("forgetting: %s", result["note"])
    state = trainer.state
    report = {
        "method": method,
        "hyperparameters": config.to_dict(),
        "layers": spec.layers,
        "layers_source": spec.source,
        "layers_file": spec.selection.to_dict() if spec.selection is not None else None,
        "kind": kind,
        "parameters": selection.to_dict(),
        "prompt_format": config.prompt_format,
        "forget_target": {**target.to_dict(), "levels": trainer.forget_levels},
        "step_size": plan.to_dict(),
        "outcome": {**result, "rows": rows},
        "arrival": trainer.arrival.state_dict() if trainer.arrival is not None else None,
        "data_sizes": {
            "forget_rows": forget_enc.rows,
            "forget_examples": len(forget_enc),
            "forget_truncated": forget_enc.truncated,
            "retain_rows": retain_enc.rows if retain_enc else (len(retain) if retain is not None else 0),
            "retain_examples": len(retain_enc) if retain_enc else 0,
            "retain_truncated": retain_enc.truncated if retain_enc else 0,
            "max_length": config.max_length,
        },
        "seed": config.seed,
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": state.epoch,
        "per_epoch": trainer.per_epoch_losses(),
        "log_history": [
            {k: v for k, v in entry.items() if k in LOGGED_KEYS + tuple(trainer.method.logs)}
            for entry in state.log_history
            if "ce_forget" in entry
        ],
        **trainer.method.record(),  # sha256: alpha_params and alpha (L_ref, the clip)
        "validation": trainer.selector.report() if trainer.selector is not None else None,
        "final_train_loss": output.training_loss,
        "stopped": trainer.stop_reason,
        "resumed_from": resumed_from,
        "wall_time_s": round(time.time() - started, 2),
        "peak_memory": peak_memory(dev, memory_reset),
        "device": str(args.device),
        "processes": trainer.accelerator.num_processes,
        "versions": _versions(config.lora),
    }
    return UnlearnRun(trainer, report)


def reset_peak_memory(device) -> bool:
    """Start measuring the peak memory of what follows: CUDA's allocator peak on a GPU, else the
    process's peak resident set size (Linux: reset through ``/proc/self/clear_refs``). False when
    the peak cannot be reset (it then counts from the process's start)."""
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory(device, reset: bool) -> dict:
    """``{"mb", "measure", "since"}``: the peak memory since :func:`reset_peak_memory` (a wall-clock
    kind of number, as ``wall_time_s``: it varies between runs and machines)."""
    since = "this unlearning" if reset else "the process's start"
    if str(device).startswith("cuda"):
        return {"mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "measure": "CUDA memory allocated (peak)", "since": since}
    try:
        status = Path("/proc/self/status").read_text()
        kb = int(status.split("VmHWM:")[1].split()[0])
        return {"mb": round(kb / 1024, 1), "measure": "resident set size of the process (peak)", "since": since}
    except (OSError, IndexError, ValueError):
        import resource

        return {"mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "measure": "resident set size of the process (peak)",
                "since": "the process's start"}


def steps_per_epoch(n_forget: int, config: UnlearnConfig, world_size: int = 1) -> int:
    """Optimizer steps of one pass over ``n_forget`` forget examples."""
    return max(1, math.ceil(n_forget / (config.batch_size * config.grad_accum * max(1, world_size))))


def probe_rows(tokenizer, forget_enc, retain_enc, data: SemEvalData | None, config: UnlearnConfig, encode: dict):
    """The rows the step-size probe trains on and measures: ``(forget, retain, description)``.

    The data's validation rows (``forget_validation`` / ``retain_validation``), as many as one
    optimizer step holds; without them a seeded sample of the rows being unlearned (in-memory
    datasets), said in the description. Never a test file.
    """
    n = config.batch_size * config.grad_accum
    if data is not None and "forget_validation" in data.splits:
        f = encode_split(tokenizer, data.get("forget", "validation"), name="forget validation",
                         label_prompt=label_prompt_flags(data.get("forget", "validation"), config.forget_tokens), label_eos=config.forget_eos, **encode)
        f = with_alternates(tokenizer, f, data.get("forget", "validation"), config, encode)
        r = None
        if retain_enc is not None and "retain_validation" in data.splits:
            r = encode_split(tokenizer, data.get("retain", "validation"), name="retain validation",
                             label_prompt=label_prompt_flags(data.get("retain", "validation"), config.forget_tokens), **encode)
        elif retain_enc is not None:
            r = retain_enc
        f, r = probe_sample(f, n, config.seed), (probe_sample(r, n, config.seed) if r is not None else None)
        where = "forget_validation" + (" + retain_validation" if r is not None and "retain_validation" in data.splits else " + retain rows" if r is not None else "")
        return f, r, f"{len(f)} forget + {len(r) if r is not None else 0} retain rows of {where}"
    f = probe_sample(forget_enc, n, config.seed)
    r = probe_sample(retain_enc, n, config.seed) if retain_enc is not None else None
    return f, r, f"{len(f)} forget + {len(r) if r is not None else 0} retain rows sampled from the rows being unlearned (no validation rows given)"


def apply_plan(args, plan: StepPlan, config: UnlearnConfig) -> None:
    """Put the plan's rate and budget into the Trainer's arguments (before ``train``)."""
    args.learning_rate = plan.lr
    if config.max_steps <= 0:
        args.num_train_epochs = plan.epochs
        args.max_steps = -1


def describe_plan(plan: StepPlan) -> str:
    """One line: the rate, where it came from, the budget."""
    tried = ", ".join(f"{p.lr:.2g}→{p.share:.2f}" for p in plan.probes)
    reach = f"; arrives in ~{plan.reach_epochs:.1f} epochs" if plan.reach_epochs else ""
    return (f"lr {plan.lr:.3g} ({plan.lr_source}{'; probes lr→share of the way: ' + tried if plan.probes else ''}{reach}), "
            f"{plan.epochs:g} epochs = {plan.max_steps} steps ({plan.epochs_source}); probe rows: {plan.rows}")


def _broadcast(trainer, make):
    """``make()`` on the main process, the same object on every process (a rate must not differ between processes)."""
    acc = trainer.accelerator
    if acc.num_processes <= 1:
        return make()
    from accelerate.utils import broadcast_object_list

    box = [make() if acc.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


#: What ``unlearn.json``'s ``log_history`` keeps of every logging step (the report's training curves).
LOGGED_KEYS = ("step", "epoch", "loss", "ce_forget", "ce_retain", "learning_rate")  # and the method's own (Method.logs)


def with_alternates(tokenizer, encoded: Encoded, rows: datasets.Dataset, config: UnlearnConfig, encode: dict) -> Encoded:
    """``encoded`` (forget rows) with each row's alternate answer attached when the method reads one
    (:attr:`unlearn.methods.Method.alternates`: IdkDPO's refusal), tokenized as the forget rows are."""
    method = get_method(config.method)(config)
    if not method.alternates:
        return encoded
    listed = [{"id": i, "input": x, "output": y} for i, x, y in zip(rows["id"], rows["input"], rows["output"])]
    answers = method.alternate_answers(listed, config.seed)
    alt = encode_rows(tokenizer, [r["input"] for r in listed], answers, ids=[r["id"] for r in listed], name="alternate answers",
                      label_prompt=label_prompt_flags(rows, config.forget_tokens), label_eos=config.forget_eos, **encode)
    return encoded.with_alternates(alt)


def label_prompt_flags(rows: datasets.Dataset, tokens: str) -> list[bool]:
    """Per row, whether the loss covers its prompt too (``forget_tokens``; the retain term follows it).

    ``all``: every row's whole text; ``output``: answers only; ``documents``: the whole text of
    sentence-completion rows (``…sc<digit>`` ids: prompt + output is the document membership
    inference reads) and only the answer of question rows (their prompt is a question).
    """
    if tokens in ("all", "output"):
        return [tokens == "all"] * len(rows)
    return [row_kind(rid) == "sc" for rid in rows["id"]]


def checkpoint_step_of(path: Path) -> int:
    return int(Path(path).name.rsplit("-", 1)[1])


def _merged(model):
    """The plain model: LoRA adapters merged into the weights (no-op without LoRA)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def unlearn_model(
    model,
    tokenizer,
    forget: datasets.Dataset,
    retain: datasets.Dataset | None,
    config: UnlearnConfig = UnlearnConfig(),
    *,
    progress: bool = True,
    device: str = "auto",
    callbacks: Sequence = (),
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    data: SemEvalData | None = None,
    reference_documents: Sequence[str] | None = None,
    validation: ValidationSet | None = None,
):
    """Unlearn ``forget`` from ``model`` in memory; return ``(model, report)``.

    The returned model is the trained one (with LoRA the adapters are merged into the
    weights); ``report`` is what ``unlearn.json`` holds apart from file paths. Checkpoints
    (``config.save_steps``) need a ``checkpoint_dir``.
    """
    run = train_unlearning(
        model, tokenizer, forget, retain, config,
        progress=progress, device=device, callbacks=callbacks, checkpoint_dir=checkpoint_dir, resume=resume,
        data=data, reference_documents=reference_documents, validation=validation,
    )
    return _merged(run.model), run.report


# --------------------------------------------------------------------------- files


def check_outputs(
    out: str | os.PathLike,
    model_path: str | os.PathLike,
    data_paths: Sequence[str | os.PathLike],
    *,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
) -> Path:
    """Every check on :func:`run_unlearning`'s outputs, before any work; returns the checkpoint folder.

    ``out`` and the checkpoint folder must not be in or around the input model or the data; an
    existing ``out`` needs ``overwrite`` and is replaced only when it is an unlearned model folder
    (it holds ``unlearn.json``); checkpoints of an earlier run need ``resume`` or ``overwrite``;
    ``resume`` needs a complete checkpoint.
    """
    out = Path(out).expanduser()
    model_dir = Path(str(model_path)).expanduser()
    model_dir = model_dir if model_dir.exists() else None
    data_paths = [Path(str(p)).expanduser() for p in data_paths]
    check_output_path(out, model_dir, data_paths)
    check_output_dir(out, overwrite=overwrite, marker=MANIFEST, command="unlearn")
    ckpt_dir = Path(checkpoint_dir).expanduser() if checkpoint_dir is not None else default_checkpoint_dir(out)
    check_output_path(ckpt_dir, model_dir, data_paths)
    complete, incomplete = list_checkpoints(ckpt_dir)
    if resume and not complete:
        raise AmnesiaError(f"{ckpt_dir}: no complete checkpoint to resume from (a checkpoint is complete once it holds amnesia_state.json)")
    if not resume and (complete or incomplete) and not overwrite:
        raise AmnesiaError(f"{ckpt_dir}: holds checkpoints of an earlier run; pass --resume to continue it or --overwrite to start over")
    return ckpt_dir


class TrainingDiverged(AmnesiaError):
    """Training stopped at a non-finite loss or gradient; no output was written (see the message)."""


def _diverged_message(run: UnlearnRun, ckpt_dir: Path | None, out: Path) -> str:
    """One line: why training stopped, where the last good weights are, that ``out`` was not written."""
    reason = run.trainer.stop_reason
    last = latest_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    kept = f"the last good checkpoint is {last}" if last is not None else "no checkpoint was written (--save-steps N keeps one)"
    return f"training diverged: {reason}; {kept}; {out} was not written (lower --lr and rerun with --overwrite)"


def _source_dtype(model_path: Path) -> torch.dtype | None:
    """The dtype the input model was saved in (config.json ``dtype``/``torch_dtype``)."""
    try:
        cfg = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)


def split_rows(data: SemEvalData, kind: str, parts: Sequence[str] = ("train", "validation")) -> datasets.Dataset | None:
    """The ``kind`` (forget/retain) rows of ``parts`` the data has, or None for a retain set it lacks.

    Unlearning reads train *and* validation by default: the validation rows (and the validation
    members' documents) are then forgotten or kept like the train rows, so checkpoint selection on
    them measures what the test measures, on rows the test does not report.
    """
    have = [data.get(kind, p) for p in parts if f"{kind}_{p}" in data.splits]
    if not have:
        if kind == "retain":
            return None
        raise AmnesiaError(f"{data.source}: no forget rows in {', '.join(f'forget_{p}' for p in parts)}")
    return have[0] if len(have) == 1 else datasets.concatenate_datasets(have)


def _load_data(data, parts: Sequence[str] = ("train", "validation")) -> tuple[datasets.Dataset, datasets.Dataset | None, str, list[Path], SemEvalData | None]:
    if isinstance(data, SemEvalData):
        return split_rows(data, "forget", parts), split_rows(data, "retain", parts), data.source, [Path(data.source)], data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1], "in-memory datasets", [], None
    semeval = load_semeval(data)
    return split_rows(semeval, "forget", parts), split_rows(semeval, "retain", parts), semeval.source, [Path(str(data)).expanduser()], semeval


def distributed_launch() -> bool:
    """True inside ``accelerate launch`` / ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def default_checkpoint_dir(out: str | os.PathLike) -> Path:
    """``<out>.checkpoints`` beside the output folder."""
    out = Path(out)
    return out.parent / f"{out.name}.checkpoints"


def run_unlearning(
    model_path: str | os.PathLike,
    data: str | os.PathLike | SemEvalData | tuple,
    out: str | os.PathLike,
    config: UnlearnConfig = UnlearnConfig(),
    *,
    model_options: ModelOptions = ModelOptions(),
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    callbacks: Sequence = (),
    progress: bool = True,
    data_paths: Sequence[str | os.PathLike] = (),
) -> dict:
    """Unlearn the forget set of ``data`` from the model at ``model_path``; write ``out``.

    ``data`` is a SemEval-layout folder or Hub id (its forget and retain rows of
    ``config.splits``, train and validation by default), a :class:`SemEvalData`, or a
    ``(forget, retain)`` pair of datasets. ``out``
    becomes a standard HF model folder with ``unlearn.json``; it must not be in or around the
    input model or the data, and an existing one is replaced only with ``overwrite`` (an empty
    folder counts as absent; see :func:`check_outputs`). Checkpoints (``config.save_steps``) go
    to ``checkpoint_dir`` (default ``<out>.checkpoints``) and are removed after success unless
    ``config.keep_checkpoints``. A non-finite loss or gradient stops training and raises
    :class:`TrainingDiverged` without writing ``out``; the checkpoints written so far (all of
    good steps) are kept. Training keeps float32 master weights unless
    ``model_options.dtype`` names another dtype; the output is saved in the input's dtype.
    Returns the manifest written to ``unlearn.json``.
    """
    config.check()
    out = Path(out).expanduser()
    model_dir = Path(str(model_path)).expanduser()
    forget, retain, source, paths, semeval = _load_data(data, config.splits)
    paths += [Path(str(p)).expanduser() for p in data_paths]
    if isinstance(data, (tuple, list)) and data_paths:
        source = ", ".join(str(p) for p in data_paths)
    ckpt_dir = check_outputs(out, model_path, paths, overwrite=overwrite, resume=resume, checkpoint_dir=checkpoint_dir)
    empty_out = out.is_dir() and not any(out.iterdir())
    if not resume:
        for old in sum(list_checkpoints(ckpt_dir), []):  # only there with overwrite (checked above)
            shutil.rmtree(old, ignore_errors=True)

    options = model_options
    if options.dtype == "auto":
        options = dataclasses.replace(options, dtype="float32")
    # Under `accelerate launch` every process loads on CPU and the Trainer places (DDP,
    # DeepSpeed) or shards (FSDP) the model; otherwise all processes would load onto one GPU.
    load_options = dataclasses.replace(options, device="cpu") if distributed_launch() else options
    model, tokenizer = load_model(model_path, load_options, for_training=True)
    save_dtype = _source_dtype(model_dir) if model_dir.is_dir() else None
    run = train_unlearning(
        model,
        tokenizer,
        forget,
        retain,
        config,
        checkpoint_dir=ckpt_dir if config.save_steps or resume else None,
        resume=resume,
        callbacks=callbacks,
        progress=progress,
        device=options.device,
        data=semeval,
    )
    if run.trainer.stop_reason is not None:
        raise TrainingDiverged(_diverged_message(run, ckpt_dir if config.save_steps or resume else None, out))
    manifest = {
        "schema": SCHEMA,
        "kind": "unlearn",
        "source_model": str(model_path),
        "source_model_id": model_id(model),
        "data": source,
        "out": str(out),
        **run.report,
    }
    save_model_folder(run, tokenizer, out, manifest, overwrite=overwrite or empty_out, dtype=save_dtype)
    if not config.keep_checkpoints and run.trainer.args.should_save:
        for ckpt in sum(list_checkpoints(ckpt_dir), []):
            shutil.rmtree(ckpt, ignore_errors=True)
        if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
            ckpt_dir.rmdir()
    return manifest


def save_model_folder(run: UnlearnRun, tokenizer, out: Path, manifest: dict, *, overwrite: bool, dtype: torch.dtype | None) -> None:
    """Write the model (LoRA merged, safetensors), tokenizer and ``unlearn.json`` atomically.

    Under ``accelerate launch`` every process takes part in gathering the weights and only the
    main process writes.
    """
    trainer = run.trainer
    acc = trainer.accelerator
    distributed = acc.num_processes > 1
    state_dict = acc.get_state_dict(trainer.model_wrapped) if distributed and not trainer.unlearn_config.lora else None
    if acc.is_main_process:
        model = _merged(acc.unwrap_model(trainer.model))
        if dtype is not None:
            if state_dict is not None:
                state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
            else:
                model.to(dtype)
        model.config.use_cache = True
        with atomic_path(out, directory=True, overwrite=overwrite) as tmp:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / MANIFEST, manifest)
        logger.debug("wrote %s", out)
    acc.wait_for_everyone()


def load_manifest(folder: str | os.PathLike) -> dict:
    """Read ``unlearn.json`` of an unlearned model folder."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise AmnesiaError(f"{folder}: no {MANIFEST} (expected a model folder written by `amnesia unlearn`)")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = [
    "UnlearnConfig",
    "UnlearnRun",
    "TrainingDiverged",
    "check_output_path",
    "check_outputs",
    "default_checkpoint_dir",
    "format_layers",
    "load_manifest",
    "run_unlearning",
    "save_model_folder",
    "split_rows",
    "train_unlearning",
    "unlearn_model",
]
