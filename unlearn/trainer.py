"""The unlearning trainer: a small ``transformers.Trainer`` subclass and its configuration.

:class:`UnlearnTrainer` reads paired forget/retain micro-batches (:mod:`unlearn.dataset`), does
once what every method shares (one forward pass, the forget NLLs, the calibrated signs, the
retain cross-entropy) and asks the configured method (:mod:`unlearn.methods`) for the loss.
Everything else is the ecosystem's Trainer: AdamW over the trainable parameters only, gradient
accumulation and clipping, bf16/fp16 autocast, activation checkpointing, ``accelerate launch``
(DDP, FSDP, DeepSpeed), ``report_to`` (tensorboard, wandb, …) and checkpoints. On top of it:

* the method's state (sha256's α schedule ``L_ref``) and the per-epoch loss sums are saved with every
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
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from tracing.errors import AmnesiaError
from tracing.io import write_json

from .calibration import levels_for, quantile
from .config import RESUME_FREE, UnlearnConfig
from .losses import ce_loss, forget_signs, sequence_nll, signed_ce
from .methods import Batch, Method, get_method

logger = logging.getLogger(__name__)

STATE_FILE = "amnesia_state.json"


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
    """The Trainer's progress bar, with the live losses (and the method's numbers) as its postfix and one line per log."""

    KEYS = (("loss", "loss"), ("ce_forget", "ce_f"), ("ce_retain", "ce_r"))

    def __init__(self, method: Method | None = None):
        super().__init__()
        self.keys = self.KEYS + tuple((k, short) for k, short in (method.logs if method else {}).items() if short)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        live = {short: f"{logs[key]:.3g}" for key, short in self.keys if isinstance(logs.get(key), (int, float))}
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
            distribution = self.measure(t.accelerator.unwrap_model(t.model))
            if distribution:  # none finite keeps the last one (a diverging step is the guard's to stop)
                t.set_forget_distribution(distribution)
                t.forget_levels.append([state.global_step, t.forget_level])


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
    """``Trainer`` whose loss is the configured unlearning method's on paired forget/retain batches.

    Extra keyword arguments: ``unlearn_config`` (an :class:`UnlearnConfig`), ``reference_model``
    (the frozen initial model for methods with a ``reference``; ``None`` with LoRA, where the base
    model with the adapters disabled is the reference), ``progress`` (show the bar).
    """

    def __init__(self, *args, unlearn_config: UnlearnConfig, reference_model=None, progress: bool = True,
                 forget_level: float | None = None, measure_forget_level=None, forget_distribution: list[float] | None = None,
                 layers: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.unlearn_config = unlearn_config
        self.layers = list(layers) if layers is not None else None  # the trained layers (a method that reads hidden states may need them)
        self.forget_level = forget_level
        self.forget_distribution = list(forget_distribution) if forget_distribution else None  # sorted reference NLLs (spread targets)
        self.forget_levels: list[list[float]] = [[0, forget_level]] if forget_level is not None else []
        self.selector = None  # a CheckpointSelector when validation runs during training (unlearn.selection)
        self.step_plan = None  # the rate and budget (unlearn.step_size.StepPlan), set before training, kept in checkpoints
        self.arrival = None  # the ArrivalWatch (unlearn.step_size) when the forget rows are watched
        self.method = get_method(unlearn_config.method)(unlearn_config)
        self.reference_model = reference_model
        self.epoch_stats: dict[int, dict[str, float]] = {}
        self.stop_reason: str | None = None
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._skip_backward = False
        tok = kwargs.get("processing_class")
        self.pad_id = int(getattr(tok, "pad_token_id", None) or 0)
        # Our loss is a per-micro-batch mean: let the Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        if hasattr(self, "loss_is_scaled_for_ga"):
            self.loss_is_scaled_for_ga = False
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)
        if progress:
            self.add_callback(UnlearnProgressCallback(self.method))
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

    def set_forget_distribution(self, distribution: list[float]) -> None:
        """A new measurement of the reference NLLs: the distribution spread targets read, and the level (its ``forget_quantile``)."""
        self.forget_distribution = sorted(distribution)
        self.forget_level = quantile(self.forget_distribution, self.unlearn_config.forget_quantile)

    def row_levels(self, inputs, rows: int, device) -> torch.Tensor | float | None:
        """The forget level of each row of a micro-batch: its own quantile of the reference NLLs with spread
        targets (``forget_spread`` and a measured distribution), else the one level."""
        if self.forget_level is None:
            return None
        q = inputs.get("forget_quantile")
        if not self.unlearn_config.forget_spread or not self.forget_distribution or q is None:
            return self.forget_level
        return torch.tensor(levels_for(q.tolist(), self.forget_distribution), device=device, dtype=torch.float32)

    def _reference_outputs(self, model, input_ids, attention_mask, hidden: bool = False):
        """The frozen initial model's outputs on some rows (with ``hidden``, its hidden states too)."""
        with torch.no_grad(), self.accelerator.autocast():
            if self.reference_model is not None:
                return self.reference_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden)
            base = self.accelerator.unwrap_model(model)
            if not hasattr(base, "disable_adapter"):
                raise AmnesiaError(f"method {self.method.name}: needs a reference model (the frozen initial model)")
            with base.disable_adapter():
                return base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden)

    def _record(self, epoch: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self._metrics[k].append(v)
        stats = self.epoch_stats.setdefault(epoch, defaultdict(float))
        stats["micro_batches"] += 1
        for k, v in values.items():
            stats[f"{k}_sum"] += v
        for key in self.method.ranges:
            if key in values:
                stats[f"{key}_min"] = min(stats.get(f"{key}_min", math.inf), values[key])
                stats[f"{key}_max"] = max(stats.get(f"{key}_max", -math.inf), values[key])

    # -- the loss
    def loss_terms(self, model, inputs, epoch: int, method: Method):
        """``(loss, values, outputs)`` of one micro-batch: ``method``'s loss and the numbers it logs."""
        cfg = self.unlearn_config
        f_ids, f_mask, f_labels = inputs["forget_input_ids"], inputs["forget_attention_mask"], inputs["forget_labels"]
        if method.needs_retain and "retain_input_ids" not in inputs:
            raise AmnesiaError(f"method {method.name}: needs retain rows")
        r_ids = r_mask = r_labels = r_logits = None
        a_ids = a_mask = a_labels = a_logits = None
        hidden = method.hidden_states
        f_hidden = r_hidden = None
        if method.alternates and "alternate_input_ids" not in inputs:
            raise AmnesiaError(f"method {method.name}: needs an alternate answer per forget row")
        if method.needs_retain or method.alternates:
            # One forward over forget + retain (+ alternate) rows: DDP/FSDP expect one forward per backward.
            parts = [(f_ids, f_mask)]
            if method.needs_retain:
                r_ids, r_mask, r_labels = inputs["retain_input_ids"], inputs["retain_attention_mask"], inputs["retain_labels"]
                parts.append((r_ids, r_mask))
            if method.alternates:
                a_ids, a_mask, a_labels = inputs["alternate_input_ids"], inputs["alternate_attention_mask"], inputs["alternate_labels"]
                parts.append((a_ids, a_mask))
            ids, mask = parts[0]
            for more_ids, more_mask in parts[1:]:
                ids, mask = _stack(ids, more_ids, self.pad_id), _stack(mask, more_mask, 0)
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
            n = f_ids.size(0)
            f_logits = out.logits[:n, : f_ids.size(1)]
            f_hidden = tuple(h[:n, : f_ids.size(1)] for h in out.hidden_states) if hidden else None
            start = n
            if method.needs_retain:
                r_logits = out.logits[start : start + r_ids.size(0), : r_ids.size(1)]
                r_hidden = tuple(h[start : start + r_ids.size(0), : r_ids.size(1)] for h in out.hidden_states) if hidden else None
                start += r_ids.size(0)
            if method.alternates:
                a_logits = out.logits[start : start + a_ids.size(0), : a_ids.size(1)]
        else:
            out = model(input_ids=f_ids, attention_mask=f_mask, output_hidden_states=hidden)
            f_logits = out.logits
            f_hidden = out.hidden_states if hidden else None
        f_nll, f_cnt = sequence_nll(f_logits, f_labels)
        rows = f_cnt > 0
        signs = forget_signs(f_nll / f_cnt.clamp(min=1), rows, self.row_levels(inputs, f_ids.size(0), f_nll.device), cfg.forget_mode)
        values = {"ce_forget": ce_loss(f_nll, f_cnt).item()}
        if self.forget_level is not None:
            values["forget_reached"] = 1.0 - (signs > 0).float().sum().item() / max(1, int(rows.sum().item()))
        ce_r = None
        if method.needs_retain:
            r_nll, r_cnt = sequence_nll(r_logits, r_labels)
            ce_r = ce_loss(r_nll, r_cnt)
            values["ce_retain"] = ce_r.item()
        rows_of = {"forget": (f_ids, f_mask), "retain": (r_ids, r_mask), "alternate": (a_ids, a_mask)}
        batch = Batch(epoch=epoch, forget_logits=f_logits, forget_labels=f_labels, forget_nll=f_nll, forget_tokens=f_cnt, signs=signs,
                      ce_forget=signed_ce(f_nll, f_cnt, signs), retain_logits=r_logits, retain_labels=r_labels, ce_retain=ce_r,
                      reference_logits=lambda which: self._reference_outputs(model, *rows_of[which]).logits,
                      forget_hidden=f_hidden, retain_hidden=r_hidden, layers=self.layers, alternate_logits=a_logits, alternate_labels=a_labels,
                      reference_hidden=lambda which: self._reference_outputs(model, *rows_of[which], hidden=True).hidden_states)
        loss, logs = method.loss(batch)
        values.update(logs)
        values["loss"] = loss.item()
        return loss, values, out

    def probe_loss(self, model, inputs) -> torch.Tensor:
        """The method's loss on a micro-batch, leaving no trace in the run (the step-size probe's; :mod:`unlearn.step_size`)."""
        loss, _, _ = self.loss_terms(model, inputs, 0, type(self.method)(self.unlearn_config, self.method.settings))
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        epoch = int(inputs["epoch"].max().item()) if "epoch" in inputs else int(self.state.epoch or 0)
        loss, values, out = self.loss_terms(model, inputs, epoch, self.method)
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
            "method_state": self.method.state_dict(),
            "epoch_stats": {str(k): dict(v) for k, v in self.epoch_stats.items()},
            "forget_level": self.forget_level,
            "forget_levels": self.forget_levels,
            "forget_distribution": self.forget_distribution,
            "config": self.unlearn_config.to_dict(),
        }
        if self.selector is not None:
            state["selection"] = self.selector.state_dict()
        if self.step_plan is not None:
            state["step_plan"] = self.step_plan.to_dict()
        if self.arrival is not None:
            state["arrival"] = self.arrival.state_dict()
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
        self.method.load_state_dict(state.get("method_state", state.get("alpha_schedule", {})))  # alpha_schedule: checkpoints before plug-ins
        if "forget_level" in state:
            self.forget_level = state["forget_level"]
            self.forget_levels = [list(x) for x in state.get("forget_levels", [])]
            self.forget_distribution = state.get("forget_distribution")
        if self.selector is not None and "selection" in state:
            self.selector.load(Path(checkpoint), state["selection"])
        if "step_plan" in state:
            from .step_size import StepPlan

            self.step_plan = StepPlan.from_dict(state["step_plan"])
        if self.arrival is not None and "arrival" in state:
            self.arrival.load_state_dict(state["arrival"])
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
        """Mean loss, CE_forget, CE_retain and the method's numbers (sha256: α, its lowest and highest) of every epoch seen, for ``unlearn.json``."""
        out = []
        for epoch in sorted(self.epoch_stats):
            s = self.epoch_stats[epoch]
            n = s.get("micro_batches", 0) or 1
            row = {"epoch": epoch + 1, "micro_batches": int(s.get("micro_batches", 0))}
            for key in ("loss", "ce_forget", "ce_retain", *self.method.logs, "forget_reached"):
                if f"{key}_sum" in s:
                    row[key] = s[f"{key}_sum"] / n
            for key in self.method.ranges:
                if f"{key}_min" in s:
                    row[f"{key}_lowest"] = s[f"{key}_min"]
                    row[f"{key}_highest"] = s[f"{key}_max"]
            out.append(row)
        return out
