"""The unlearning trainer: a small ``transformers.Trainer`` subclass and its configuration.

:class:`UnlearnTrainer` reads paired forget/retain micro-batches (:mod:`unlearn.dataset`) and
computes one of the losses of :mod:`unlearn.losses` in :meth:`~UnlearnTrainer.compute_loss`.
Everything else is the ecosystem's Trainer: AdamW over the trainable parameters only, gradient
accumulation and clipping, bf16/fp16 autocast, activation checkpointing, ``accelerate launch``
(DDP, FSDP, DeepSpeed), ``report_to`` (tensorboard, wandb, …) and checkpoints. On top of it:

* the sha256 α schedule's state (``L_ref``) and the per-epoch loss sums are saved with every
  checkpoint (``amnesia_state.json``) and restored on resume, so a resumed run is exact;
* a checkpoint counts only once ``amnesia_state.json`` — written atomically, last — is in it;
  :func:`latest_checkpoint` returns the newest complete one, so a run killed while saving
  resumes from the checkpoint before;
* a non-finite loss or gradient stops training before the optimizer step that would apply it
  (the weights stay those of the last good step, no checkpoint is written after it);
  :attr:`UnlearnTrainer.stop_reason` says why (``run_unlearning`` then raises instead of saving);
* a calibrated forget target (``forget_level``, set from never-seen reference text by
  :mod:`unlearn.calibration`) stops pushing a forget row once its NLL reaches that level, or
  pulls it back (``forget_mode="pull"``), so forgetting aims at "never seen", not at infinity.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from tracing.errors import AmnesiaError
from tracing.io import write_json

from .losses import (
    AlphaParams,
    AlphaSchedule,
    ce_loss,
    forget_signs,
    ga_loss,
    gd_loss,
    kl_divergence,
    kl_loss,
    npo_loss,
    sequence_nll,
    sha256_loss,
    signed_ce,
)

logger = logging.getLogger(__name__)

METHODS = ("sha256", "ga", "gd", "kl", "npo")
NEEDS_RETAIN = {"sha256": True, "ga": False, "gd": True, "kl": True, "npo": True}
REFERENCE_ON = {"kl": "retain", "npo": "forget"}  # methods that need the frozen initial model
STATE_FILE = "amnesia_state.json"
# Config fields that may change between an interrupted run and its resume.
RESUME_FREE = ("logging_steps", "save_steps", "save_total_limit", "report_to", "keep_checkpoints")


@dataclass
class UnlearnConfig:
    """Every hyperparameter of the unlearning stage.

    The optimization defaults are the paper's for OLMo-1B/7B: MLPs of layers 0-5, lr 1.5e-5,
    per-device batch 12 × accumulation 10, 8 epochs, bf16 (``bf16`` is off here so the defaults
    also run on CPU; turn it on for GPUs). The forget term is ours, calibrated to never-seen text
    (:mod:`unlearn.calibration`): ``forget_target="auto"``, ``forget_mode="pull"``,
    ``forget_tokens="all"``, ``forget_eos=False``, re-measured every step, with a constant
    learning rate (the target is the brake). ``unlearn.semeval.paper_config`` is the paper's
    recipe unchanged (``forget_target="none"``, answers only, EOS included, linear decay).
    """

    method: Literal["sha256", "ga", "gd", "kl", "npo"] = "sha256"
    layers: str | list[int] = "0-5"
    kind: Literal["auto", "mlp", "attn", "all"] = "auto"
    epochs: float = 8.0
    max_steps: int = -1
    lr: float = 1.5e-5
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 12
    grad_accum: int = 10
    max_length: int = 512
    schedule: Literal["joint", "sequential"] = "joint"
    chunk_size: int = 32
    retain_ratio: int = 1
    group_by_length: bool = False
    prompt_format: Literal["raw", "chat"] = "raw"
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    seed: int = 42
    # sha256: α = clip(a·b^(CE_r − L_ref) + c, alpha_min, alpha_max) when CE_r > L_ref
    alpha_variant: Literal["paper", "code"] = "paper"
    alpha_a: float = 0.3
    alpha_b: float = 6.0
    alpha_c: float = 0.8
    alpha_min: float = 1.2
    alpha_max: float | None = None
    npo_beta: float = 0.1
    forget_target: str | float = "auto"
    forget_reference: str | None = None
    forget_quantile: float = 0.5
    forget_mode: Literal["pull", "stop"] = "pull"
    forget_update_steps: int = 1
    forget_tokens: Literal["all", "documents", "output"] = "all"
    forget_eos: bool = False
    splits: list[str] = field(default_factory=lambda: ["train", "validation"])
    eval_steps: int = 0
    eval_rows: int = 64
    select_by: Literal["final", "mia", "task"] = "final"
    patience: int = 0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    logging_steps: int = 10
    save_steps: int = 0
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    report_to: list[str] = field(default_factory=lambda: ["none"])

    def check(self) -> None:
        """Raise :class:`AmnesiaError` for an impossible value (named like the CLI option)."""
        if self.method not in METHODS:
            raise AmnesiaError(f"method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.kind not in ("auto", "mlp", "attn", "all"):
            raise AmnesiaError(f"kind {self.kind!r}: expected one of auto, mlp, attn, all")
        if self.prompt_format not in ("raw", "chat"):
            raise AmnesiaError(f"prompt_format {self.prompt_format!r}: expected raw or chat")
        if self.schedule not in ("joint", "sequential"):
            raise AmnesiaError(f"schedule {self.schedule!r}: expected joint or sequential")
        if self.schedule == "sequential" and (self.epochs != int(self.epochs) or self.epochs < 1):
            raise AmnesiaError(f"epochs {self.epochs}: the sequential schedule needs a whole number of passes per chunk")
        if self.alpha_variant not in ("paper", "code"):
            raise AmnesiaError(f"alpha_variant {self.alpha_variant!r}: expected paper or code")
        if self.group_by_length and self.schedule != "joint":
            raise AmnesiaError(f"group_by_length: works with the joint schedule only, not {self.schedule!r}")
        positive = {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_length": self.max_length,
            "logging_steps": self.logging_steps,
            "lora_r": self.lora_r,
            "chunk_size": self.chunk_size,
            "retain_ratio": self.retain_ratio,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise AmnesiaError(f"{name} {value!r}: expected a positive integer")
        if not self.lr > 0:
            raise AmnesiaError(f"lr {self.lr}: expected a positive number")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise AmnesiaError(f"epochs {self.epochs}: expected a positive number (or max_steps > 0)")
        if self.save_steps < 0 or self.save_total_limit < 1:
            raise AmnesiaError(f"save_steps {self.save_steps} / save_total_limit {self.save_total_limit}: expected save_steps >= 0 and save_total_limit >= 1")
        if self.bf16 and self.fp16:
            raise AmnesiaError("bf16 and fp16 are both on: pick one")
        if self.max_grad_norm < 0:
            raise AmnesiaError(f"max_grad_norm {self.max_grad_norm}: expected >= 0 (0 turns clipping off)")
        if not self.npo_beta > 0:
            raise AmnesiaError(f"npo_beta {self.npo_beta}: expected a positive number")
        target = self.forget_target
        if isinstance(target, str) and target not in ("auto", "none"):
            try:
                target = float(target)
            except ValueError:
                raise AmnesiaError(f"forget_target {self.forget_target!r}: expected auto, none or a positive per-token NLL") from None
        if not isinstance(target, str) and not (isinstance(target, (int, float)) and target > 0):
            raise AmnesiaError(f"forget_target {self.forget_target!r}: expected auto, none or a positive per-token NLL")
        if self.forget_mode not in ("stop", "pull"):
            raise AmnesiaError(f"forget_mode {self.forget_mode!r}: expected stop or pull")
        if self.forget_tokens not in ("all", "documents", "output"):
            raise AmnesiaError(f"forget_tokens {self.forget_tokens!r}: expected all, documents or output")
        if not isinstance(self.forget_update_steps, int) or self.forget_update_steps < 0:
            raise AmnesiaError(f"forget_update_steps {self.forget_update_steps!r}: expected an integer >= 0 (0 = measure the level once)")
        if not self.splits or any(p not in ("train", "validation") for p in self.splits):
            raise AmnesiaError(f"splits {self.splits!r}: expected a non-empty list of train, validation")
        if not isinstance(self.eval_steps, int) or self.eval_steps < 0:
            raise AmnesiaError(f"eval_steps {self.eval_steps!r}: expected an integer >= 0 (0 = no validation during training)")
        if not isinstance(self.eval_rows, int) or self.eval_rows < 1:
            raise AmnesiaError(f"eval_rows {self.eval_rows!r}: expected a positive number of validation rows per split")
        if self.select_by not in ("final", "mia", "task"):
            raise AmnesiaError(f"select_by {self.select_by!r}: expected final, mia or task")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise AmnesiaError(f"patience {self.patience!r}: expected an integer >= 0 (0 = never stop early)")
        if not 0 < self.forget_quantile < 1:
            raise AmnesiaError(f"forget_quantile {self.forget_quantile}: expected a number in (0, 1)")
        if not 0 <= self.lora_dropout < 1:
            raise AmnesiaError(f"lora_dropout {self.lora_dropout}: expected a number in [0, 1)")
        p = self.alpha_params()
        if not 0 < p.alpha_min <= p.alpha_max:
            raise AmnesiaError(f"alpha_min {p.alpha_min} / alpha_max {p.alpha_max}: expected 0 < alpha_min <= alpha_max")
        if not self.alpha_b > 0:
            raise AmnesiaError(f"alpha_b {self.alpha_b}: expected a positive base")
        from .params import check_layer_spec

        check_layer_spec(self.layers)  # a typo or a missing layers.json fails before any model loads

    def alpha_params(self) -> AlphaParams:
        """The α constants; ``alpha_variant='code'`` clips at 2.3 (unless ``alpha_max`` is set) and rounds to 0.1."""
        code = self.alpha_variant == "code"
        default_max = AlphaParams.code().alpha_max if code else AlphaParams.paper().alpha_max
        return AlphaParams(
            a=self.alpha_a,
            b=self.alpha_b,
            c=self.alpha_c,
            alpha_min=self.alpha_min,
            alpha_max=self.alpha_max if self.alpha_max is not None else default_max,
            decimals=1 if code else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "UnlearnConfig":
        """Build from a mapping (e.g. a YAML file's ``unlearn:`` section); unknown keys are an error."""
        import typing

        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise AmnesiaError(f"unlearn config: unknown key {unknown[0]!r} (known: {', '.join(sorted(hints))})")
        values = dict(values)
        for key, value in values.items():
            hint = hints[key]
            if hint is float or hint == (float | None):
                if isinstance(value, int) and not isinstance(value, bool):
                    values[key] = float(value)
                elif not (isinstance(value, float) or (value is None and hint != float)):
                    raise AmnesiaError(f"unlearn config: {key} must be a number, got {value!r}")
            elif hint is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise AmnesiaError(f"unlearn config: {key} must be an integer, got {value!r}")
            elif hint is bool and not isinstance(value, bool):
                raise AmnesiaError(f"unlearn config: {key} must be true or false, got {value!r}")
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = "unlearn") -> "UnlearnConfig":
        """Read a YAML file (its ``section`` mapping when present, else the whole file)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise AmnesiaError(f"{path}: config file does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise AmnesiaError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if section and isinstance(data, dict) and isinstance(data.get(section), dict):
            data = data[section]
        if not isinstance(data, dict):
            raise AmnesiaError(f"{path}: expected a mapping of unlearning hyperparameters")
        try:
            return cls.from_dict(data)
        except AmnesiaError as exc:
            raise AmnesiaError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- checkpoints


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def list_checkpoints(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """``(complete, incomplete)`` ``checkpoint-N`` folders in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return [], []
    found = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()), key=checkpoint_step)
    complete = [p for p in found if (p / STATE_FILE).is_file()]
    return complete, [p for p in found if p not in complete]


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest *complete* checkpoint (one with ``amnesia_state.json``) in ``folder``, or None."""
    complete, _ = list_checkpoints(folder)
    return complete[-1] if complete else None


# --------------------------------------------------------------------------- callbacks


class UnlearnProgressCallback(ProgressCallback):
    """The Trainer's progress bar, with the live losses and α as its postfix and one line per log."""

    KEYS = (("loss", "loss"), ("ce_forget", "ce_f"), ("ce_retain", "ce_r"), ("alpha", "α"), ("kl_retain", "kl"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        live = {short: f"{logs[key]:.3g}" for key, short in self.KEYS if isinstance(logs.get(key), (int, float))}
        if live:
            self.training_bar.set_postfix(live, refresh=True)
            parts = " ".join(f"{k} {v}" for k, v in live.items())
            self.training_bar.write(f"step {state.global_step} epoch {state.epoch or 0:.2f}: {parts}")


class _ForgetLevelTracker(TrainerCallback):
    """Every ``every`` optimizer steps: measure the forget level again on the current model."""

    def __init__(self, trainer: "UnlearnTrainer", measure, every: int):
        self.trainer, self.measure, self.every = trainer, measure, every

    def on_step_end(self, args, state, control, model=None, **kwargs):
        t = self.trainer
        if self.every and state.global_step % self.every == 0 and t.stop_reason is None:
            level = float(self.measure(t.accelerator.unwrap_model(t.model)))
            if math.isfinite(level):  # a non-finite level keeps the last one (a diverging step is the guard's to stop)
                t.forget_level = level
                t.forget_levels.append([state.global_step, level])


class _NonFiniteGradGuard(TrainerCallback):
    """Before each optimizer step: a non-finite gradient drops all gradients and stops training."""

    def __init__(self, trainer: "UnlearnTrainer"):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        t = self.trainer
        if t.stop_reason is not None or t.is_deepspeed_enabled:
            return
        grads = [p.grad for p in t.model.parameters() if p.requires_grad and p.grad is not None]
        bad = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if t._any_process(bad):
            t.stop(f"non-finite gradient at step {state.global_step + 1}; kept the weights of step {state.global_step}")
            t.model.zero_grad(set_to_none=True)
            control.should_training_stop = True


# --------------------------------------------------------------------------- trainer


def _stack(a: torch.Tensor, b: torch.Tensor, pad: int) -> torch.Tensor:
    """Rows of ``a`` then rows of ``b``, right-padded with ``pad`` to the wider of the two."""
    width = max(a.size(1), b.size(1))
    a = torch.nn.functional.pad(a, (0, width - a.size(1)), value=pad)
    b = torch.nn.functional.pad(b, (0, width - b.size(1)), value=pad)
    return torch.cat([a, b], dim=0)


class UnlearnTrainer(Trainer):
    """``Trainer`` whose loss is one of the unlearning methods on paired forget/retain batches.

    Extra keyword arguments: ``unlearn_config`` (an :class:`UnlearnConfig`), ``reference_model``
    (the frozen initial model for ``kl``/``npo``; ``None`` with LoRA, where the base model with
    the adapters disabled is the reference), ``progress`` (show the bar).
    """

    def __init__(self, *args, unlearn_config: UnlearnConfig, reference_model=None, progress: bool = True,
                 forget_level: float | None = None, measure_forget_level=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.unlearn_config = unlearn_config
        self.forget_level = forget_level
        self.forget_levels: list[list[float]] = [[0, forget_level]] if forget_level is not None else []
        self.selector = None  # a CheckpointSelector when validation runs during training (unlearn.selection)
        self.method = unlearn_config.method
        self.reference_model = reference_model
        self.alpha_schedule = AlphaSchedule(unlearn_config.alpha_params())
        self.epoch_stats: dict[int, dict[str, float]] = {}
        self.stop_reason: str | None = None
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._skip_backward = False
        tok = kwargs.get("processing_class")
        self._pad_id = int(getattr(tok, "pad_token_id", None) or 0)
        # Our loss is a per-micro-batch mean: let the Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        if hasattr(self, "loss_is_scaled_for_ga"):
            self.loss_is_scaled_for_ga = False
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)
        if progress:
            self.add_callback(UnlearnProgressCallback)
        self.add_callback(_NonFiniteGradGuard(self))
        if measure_forget_level is not None and unlearn_config.forget_update_steps:
            self.add_callback(_ForgetLevelTracker(self, measure_forget_level, unlearn_config.forget_update_steps))

    # -- data: keys epoch·n + i, in order; the dataset maps them to (forget, retain) rows
    def _get_train_sampler(self, train_dataset=None):
        from .dataset import EpochSampler

        return EpochSampler(len(train_dataset if train_dataset is not None else self.train_dataset))

    def floating_point_ops(self, inputs) -> int:
        tokens = sum(v.numel() for k, v in inputs.items() if k.endswith("_input_ids"))
        return 6 * tokens * self.model.num_parameters(exclude_embeddings=True) if hasattr(self.model, "num_parameters") else 0

    # -- helpers
    def _any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes <= 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            logger.warning("stopping: %s", reason)

    def _reference_logits(self, model, input_ids, attention_mask) -> torch.Tensor:
        with torch.no_grad(), self.accelerator.autocast():
            if self.reference_model is not None:
                return self.reference_model(input_ids=input_ids, attention_mask=attention_mask).logits
            base = self.accelerator.unwrap_model(model)
            if not hasattr(base, "disable_adapter"):
                raise AmnesiaError(f"method {self.method}: needs a reference model (the frozen initial model)")
            with base.disable_adapter():
                return base(input_ids=input_ids, attention_mask=attention_mask).logits

    def _record(self, epoch: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self._metrics[k].append(v)
        stats = self.epoch_stats.setdefault(epoch, defaultdict(float))
        stats["micro_batches"] += 1
        for k, v in values.items():
            stats[f"{k}_sum"] += v
        if "alpha" in values:
            stats["alpha_min"] = min(stats.get("alpha_min", math.inf), values["alpha"])
            stats["alpha_max"] = max(stats.get("alpha_max", -math.inf), values["alpha"])

    # -- the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cfg = self.unlearn_config
        epoch = int(inputs["epoch"].max().item()) if "epoch" in inputs else int(self.state.epoch or 0)
        f_ids, f_mask, f_labels = inputs["forget_input_ids"], inputs["forget_attention_mask"], inputs["forget_labels"]
        needs_retain = NEEDS_RETAIN[self.method]
        if needs_retain and "retain_input_ids" not in inputs:
            raise AmnesiaError(f"method {self.method}: needs retain rows")
        if needs_retain:
            # One forward over forget + retain rows: DDP/FSDP expect one forward per backward.
            r_ids, r_mask, r_labels = inputs["retain_input_ids"], inputs["retain_attention_mask"], inputs["retain_labels"]
            ids, mask = _stack(f_ids, r_ids, self._pad_id), _stack(f_mask, r_mask, 0)
            out = model(input_ids=ids, attention_mask=mask)
            n = f_ids.size(0)
            f_logits, r_logits = out.logits[:n, : f_ids.size(1)], out.logits[n:, : r_ids.size(1)]
        else:
            out = model(input_ids=f_ids, attention_mask=f_mask)
            f_logits = out.logits
        f_nll, f_cnt = sequence_nll(f_logits, f_labels)
        rows = f_cnt > 0
        signs = forget_signs(f_nll / f_cnt.clamp(min=1), rows, self.forget_level, cfg.forget_mode)
        ce_f = signed_ce(f_nll, f_cnt, signs)
        values = {"ce_forget": ce_loss(f_nll, f_cnt).item()}
        if self.forget_level is not None:
            values["forget_reached"] = 1.0 - (signs > 0).float().sum().item() / max(1, int(rows.sum().item()))

        ce_r = None
        if needs_retain:
            r_nll, r_cnt = sequence_nll(r_logits, r_labels)
            ce_r = ce_loss(r_nll, r_cnt)
            values["ce_retain"] = ce_r.item()

        if self.method == "ga":
            loss = ga_loss(ce_f)
        elif self.method == "gd":
            loss = gd_loss(ce_f, ce_r)
        elif self.method == "sha256":
            alpha = self.alpha_schedule.alpha(epoch, values["ce_retain"])
            values["alpha"] = alpha
            loss = sha256_loss(ce_f, ce_r, alpha)
        elif self.method == "kl":
            ref = self._reference_logits(model, r_ids, r_mask)
            kl = kl_divergence(r_logits, ref, r_labels)
            values["kl_retain"] = kl.item()
            loss = kl_loss(ce_f, kl)
        elif self.method == "npo":
            ref = self._reference_logits(model, f_ids, f_mask)
            ref_nll, _ = sequence_nll(ref, f_labels)
            npo = npo_loss(f_nll, ref_nll.detach(), cfg.npo_beta, signs, f_cnt)
            values["npo"] = npo.item()
            loss = npo + ce_r
        else:  # pragma: no cover - check() rejects it
            raise AmnesiaError(f"method {self.method!r}: unknown")

        values["loss"] = loss.item()
        if self._any_process(not math.isfinite(values["loss"])):
            self.stop(f"non-finite loss at step {self.state.global_step + 1} (epoch {epoch}); kept the weights of step {self.state.global_step}")
            self._skip_backward = True
            zero = torch.zeros((), device=loss.device, requires_grad=True)
            return (zero, out) if return_outputs else zero
        self._record(epoch, values)
        return (loss, out) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.stop_reason is not None:  # a guard already fired in this step
            self.control.should_training_stop = True
            return torch.zeros((), device=self.args.device)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._skip_backward:
            # Drop the gradients this step accumulated so far: the optimizer skips parameters
            # without a gradient, so the weights stay those of the last good step.
            model.zero_grad(set_to_none=True)
            self.control.should_training_stop = True
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._metrics and "loss" in logs:
            for key, values in self._metrics.items():
                if key != "loss":  # the Trainer logs the same mean loss itself
                    logs[key] = sum(values) / len(values)
            self._metrics.clear()
        super().log(logs, start_time)

    # -- state carried through checkpoints
    def unlearn_state(self) -> dict:
        state = {
            "schema": 1,
            "global_step": self.state.global_step,
            "alpha_schedule": self.alpha_schedule.state_dict(),
            "epoch_stats": {str(k): dict(v) for k, v in self.epoch_stats.items()},
            "forget_level": self.forget_level,
            "forget_levels": self.forget_levels,
            "config": self.unlearn_config.to_dict(),
        }
        if self.selector is not None:
            state["selection"] = self.selector.state_dict()
        return state

    def load_unlearn_state(self, checkpoint: str | Path) -> None:
        path = Path(checkpoint) / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AmnesiaError(f"{path}: cannot read the checkpoint's unlearning state ({exc})") from None
        saved = state.get("config", {})
        now = self.unlearn_config.to_dict()
        for key, value in now.items():
            if key in RESUME_FREE or key not in saved:
                continue
            if saved[key] != value and not (isinstance(value, list) and list(saved[key]) == value):
                raise AmnesiaError(
                    f"{checkpoint}: was written with {key}={saved[key]!r}, this run has {key}={value!r} "
                    "(resume with the same settings, or start over with --overwrite)"
                )
        self.alpha_schedule.load_state_dict(state["alpha_schedule"])
        if "forget_level" in state:
            self.forget_level = state["forget_level"]
            self.forget_levels = [list(x) for x in state.get("forget_levels", [])]
        if self.selector is not None and "selection" in state:
            self.selector.load(Path(checkpoint), state["selection"])
        self.epoch_stats = {}
        for k, v in state.get("epoch_stats", {}).items():
            stats = defaultdict(float)
            stats.update(v)
            self.epoch_stats[int(k)] = stats

    def _save_checkpoint(self, model, trial) -> None:
        if self.stop_reason is not None:  # never checkpoint the step a guard refused
            return
        if self.state.max_steps and self.state.global_step >= self.state.max_steps:
            # The model folder is written right after the last step. A checkpoint of it would be
            # worse than useless: the Trainer resumed from it runs one step past the end.
            return
        super()._save_checkpoint(model, trial)
        run_dir = Path(self._get_output_dir(trial=trial))
        ckpt = run_dir / f"checkpoint-{self.state.global_step}"
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            if self.selector is not None:
                self.selector.save(ckpt)
            write_json(ckpt / STATE_FILE, self.unlearn_state())  # last, atomically: marks it complete
            complete, incomplete = list_checkpoints(run_dir)
            for old in complete[: -self.unlearn_config.save_total_limit] + [p for p in incomplete if p != ckpt]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def per_epoch_losses(self) -> list[dict]:
        """Mean loss, CE_forget, CE_retain, α (and KL/NPO) of every epoch seen, for ``unlearn.json``."""
        out = []
        for epoch in sorted(self.epoch_stats):
            s = self.epoch_stats[epoch]
            n = s.get("micro_batches", 0) or 1
            row = {"epoch": epoch + 1, "micro_batches": int(s.get("micro_batches", 0))}
            for key in ("loss", "ce_forget", "ce_retain", "alpha", "kl_retain", "npo", "forget_reached"):
                if f"{key}_sum" in s:
                    row[key] = s[f"{key}_sum"] / n
            if "alpha_min" in s:
                row["alpha_lowest"] = s["alpha_min"]
                row["alpha_highest"] = s["alpha_max"]
            out.append(row)
        return out
