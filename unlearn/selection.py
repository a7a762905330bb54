"""Validation during unlearning: score every ``eval_steps`` steps, keep the best weights, stop early.

:class:`CheckpointSelector` is a ``TrainerCallback``. Before the first step and every
``eval_steps`` optimizer steps (and after the last) it scores the model on a
:class:`~unlearn.eval.validation.ValidationSet` (validation rows and ``mia_data/validation/``
documents only), appends the scores to its history, and when the selection value
(``select_by``: the final-score proxy, the MIA score or the task aggregate) beats the best so far
copies the trainable tensors — the only ones training changes — to CPU. ``patience``
evaluations without improvement stop training. ``select_by: forgotten`` is MUSE's rule (Shi et
al. 2024, the authors' ``get_best_forget_quality.py``): the first step whose forget knowledge is
at or below ``floor`` (the retain model's) is kept and training stops there; until one is, the
step with the lowest forget knowledge is the best. Deliberate differences from MUSE: the signal
is the validation's forget knowledge (SemEval's exact match of each forget validation answer),
not KnowMem's ROUGE-L F1 on MUSE's test QA, so no test row chooses the checkpoint. At the end the trainer loads the best weights
back (:meth:`restore_best`). The state (history, best step, best tensors) travels with every
checkpoint, so a resumed run selects exactly as an uninterrupted one.

The step-0 score (the target itself) is part of the curve but not a candidate: unlearning always
returns an unlearned model.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from tracing.errors import AmnesiaError

from .eval.validation import ValidationSet, score_validation, selection_value

logger = logging.getLogger(__name__)
BEST_FILE = "best_trainable.safetensors"


class CheckpointSelector(TrainerCallback):
    """See the module docstring. ``trainer`` is the :class:`~unlearn.trainer.UnlearnTrainer` it serves."""

    def __init__(self, trainer, validation: ValidationSet, *, eval_steps: int, select_by: str = "final", patience: int = 0, batch_size: int | None = None,
                 floor: float = 0.0):
        self.trainer = trainer
        self.floor = floor
        self.reached_step: int | None = None  # select_by forgotten: the first step at or below the floor
        self.validation = validation
        self.eval_steps = eval_steps
        self.select_by = select_by
        self.patience = patience
        self.batch_size = batch_size
        self.history: list[dict] = []
        self.best_step: int | None = None
        self.best_value = -math.inf
        self.best_tensors: dict[str, torch.Tensor] | None = None
        self.bad_evals = 0
        self.stopped_early = False

    # -- scoring
    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def evaluate(self, step: int) -> dict:
        if any(h["step"] == step for h in self.history):
            return next(h for h in self.history if h["step"] == step)
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        with torch.no_grad():
            scores = score_validation(model, self.trainer.processing_class, self.validation, batch_size=self.batch_size)
        entry = {"step": step, **scores}
        self.history.append(entry)
        if step > 0:
            value = selection_value(scores, self.select_by)
            if value > self.best_value:
                self.best_value, self.best_step, self.bad_evals = value, step, 0
                self.best_tensors = {n: p.detach().to("cpu", copy=True) for n, p in self._trainable().items()}
            else:
                self.bad_evals += 1
            if self.select_by == "forgotten" and self.reached_step is None and scores.get("forget_knowledge") is not None \
                    and scores["forget_knowledge"] <= self.floor:
                self.reached_step = step
        logger.info("validation step %d: %s", step, _describe(entry))
        return entry

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.history:
            self.evaluate(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.stop_reason is not None:
            return
        if state.global_step % self.eval_steps == 0 or state.global_step >= state.max_steps:
            self.evaluate(state.global_step)
            if self.reached_step is not None and state.global_step < state.max_steps:
                self.stopped_early = True
                control.should_training_stop = True
                logger.info("validation: forget knowledge at or below %.3g at step %d (select_by forgotten); stopping", self.floor, self.reached_step)
            elif self.patience and self.bad_evals >= self.patience and state.global_step < state.max_steps:
                self.stopped_early = True
                control.should_training_stop = True
                logger.info("validation: no improvement in %d evaluations; stopping early (best step %s)", self.patience, self.best_step)

    # -- the kept weights
    def restore_best(self) -> None:
        """Load the best step's trainable tensors into the model (no-op without a best step)."""
        if self.best_tensors is None:
            return
        params = self._trainable()
        missing = set(self.best_tensors) - set(params)
        if missing:
            raise AmnesiaError(f"validation: the kept weights name parameters the model does not train ({sorted(missing)[0]})")
        with torch.no_grad():
            for name, tensor in self.best_tensors.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))

    def report(self) -> dict:
        best = next((h for h in self.history if h["step"] == self.best_step), None)
        return {
            "eval_steps": self.eval_steps,
            "select_by": self.select_by,
            **({"floor": self.floor, "reached_step": self.reached_step} if self.select_by == "forgotten" else {}),
            "patience": self.patience,
            "data": self.validation.describe(),
            "history": self.history,
            "best_step": self.best_step,
            "best": best,
            "stopped_early": self.stopped_early,
        }

    # -- checkpoints
    def state_dict(self) -> dict:
        return {"history": self.history, "best_step": self.best_step, "best_value": self.best_value if math.isfinite(self.best_value) else None,
                "bad_evals": self.bad_evals, "stopped_early": self.stopped_early, "reached_step": self.reached_step}

    def save(self, folder: Path) -> None:
        if self.best_tensors is not None:
            from safetensors.torch import save_file

            save_file({n: t.contiguous() for n, t in self.best_tensors.items()}, str(Path(folder) / BEST_FILE))

    def load(self, folder: Path, state: dict) -> None:
        self.history = list(state.get("history", []))
        self.best_step = state.get("best_step")
        self.best_value = state["best_value"] if state.get("best_value") is not None else -math.inf
        self.bad_evals = int(state.get("bad_evals", 0))
        self.stopped_early = bool(state.get("stopped_early", False))
        self.reached_step = state.get("reached_step")
        path = Path(folder) / BEST_FILE
        if self.best_step is not None:
            if not path.is_file():
                raise AmnesiaError(f"{folder}: the checkpoint names best step {self.best_step} but has no {BEST_FILE}")
            from safetensors.torch import load_file

            self.best_tensors = load_file(str(path))


def _describe(entry: dict) -> str:
    keys = (("final", "final"), ("task", "task"), ("mia_auc", "AUC"), ("forget_knowledge", "forget EM"), ("retain_knowledge", "retain EM"))
    return ", ".join(f"{label} {entry[k]:.3f}" for k, label in keys if isinstance(entry.get(k), (int, float)))
