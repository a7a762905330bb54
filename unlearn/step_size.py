"""The automatic step size: a short probe that measures how far the weights must move to forget.

Calibrated forgetting (:mod:`unlearn.calibration`) says *where* a forget row should end: the
per-token NLL of text the model never saw. This module decides *how fast* to get there, from the
model and the request instead of a table of models. A learning rate that is right for a 6-layer
model trained from scratch does nothing to a pretrained one, and one that is right on one CPU
overshoots on another.

Adam moves every trained weight by about the learning rate per step, whatever the gradient's
scale, so what a run does is set by its *displacement* D = Σ rate over the steps (when the steps
keep their direction). Measured on the probe rows, the share of the way to the level is mostly a
function of D — on the demo 3 steps at 1e-3 and 9 at 3e-4 cover 0.014–0.015 of it, 3 at 3e-3, 9 at
1e-3 and 27 at 3e-4 cover 0.26–0.48, and from D ≈ 0.027 on every run is at the level — rising like
a sigmoid: nothing at first (a memorised row sits on a plateau), then fast, then held at the level
by the pull-back (``docs/step-size.md`` has the table, and SmolLM2's). So the one number to measure is **D_arrive**, the displacement at
which the rows arrive.

:func:`plan_steps` finds it with a few **probes**. A probe starts from the initial weights,
takes ``probe_steps`` optimizer steps of the method's own loss (the same trainer, optimizer,
clipping and precision as training) on a fixed set of *validation* rows — as many forget rows as
one training step holds, and as many retain rows — measures each probed forget row's per-token
NLL, and restores the weights. A probe **arrives** when the median row covered ``ARRIVE`` (80 %)
of the way from its NLL to the level — or went too far: the retain rows moved half of the way
there (``BROKEN``), or the step diverged. The search climbs by √10 from ``1e-4`` until a probe
arrives (or descends until one does not), bisects the bracket twice in log space, and
interpolates: ``D_arrive = probe_steps × rate`` at the arrival. Only the smallest arriving rate
is looked for: far above it the response is not monotone (on SmolLM2 3 steps at 3e-3 overshoot
the level, at 1e-2 they break the retain rows and land below it), so the search never goes there.

In training a row is pushed directly once per epoch; the other rows' steps move it too (they
share templates and facts), but less: the run's displacement counts at a rate ``CONSISTENCY``
(0.25, measured on the demo: the probe arrives at D ≈ 0.019 there, the run at 1e-3 arrived
around step 60–75, D = 0.06–0.075). The learning rate is the one that covers ``D_arrive`` in
``reach_epochs`` epochs::

    lr = D_arrive / (CONSISTENCY × reach_epochs × steps_per_epoch)

``epochs: auto`` trains ``budget_factor`` times as long as the plan needs to arrive (validation
and patience stop earlier; a consistency two or three times off still arrives inside the budget).
A numeric ``lr`` with ``epochs: auto`` runs the same probes and sizes the budget for that rate.

The probe reads only validation rows (``forget_validation``/``retain_validation``); without them
(the in-memory API given bare datasets) it reads a seeded sample of the rows it is given and
``StepPlan.rows`` says so. It never reads a test file.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass, field

import torch
from transformers import TrainerCallback

from tracing.errors import AmnesiaError

from .calibration import levels_for
from .dataset import Encoded, row_quantiles
from .losses import sequence_nll

FIRST_RATE = 1e-4
LOWEST_RATE = 1e-7
HIGHEST_RATE = 1.0
ARRIVE = 0.8  # a probe arrives when its median row covered this share of the way to the level
HOLD_AT = 1.0  # training holds (the rate × hold_factor) once the watch rows' median row is at its level
CONSISTENCY = 0.25  # share of a run's displacement that moves a given row (measured on the demo; module docstring)
CLIMB = math.sqrt(10)  # the search's step while no probe has arrived
BISECTIONS = 2  # after bracketing: the arrival rate to within a factor 10^(1/8) ≈ 1.33
BROKEN = 0.5  # a probe whose retain rows moved this share of the way to the level went too far, whatever the forget rows did
MAX_EPOCHS = 100.0  # epochs: auto never plans more (a rate that barely moves is reported, not trained for days)


@dataclass(frozen=True)
class Probe:
    """One probe: the rate, the median row's share of the way to the level, the probed rows' mean NLL after it."""

    lr: float
    share: float
    forget_nll: float
    retain_nll: float | None
    retain_share: float | None = None  # the retain rows' median share of the way to the level (they should not move)

    @property
    def arrived(self) -> bool:
        """Far enough: the forget rows arrived, or the retain rows broke, or the step diverged."""
        broken = self.retain_share is not None and (not math.isfinite(self.retain_share) or self.retain_share >= BROKEN)
        return not math.isfinite(self.share) or self.share >= ARRIVE or broken


@dataclass(frozen=True)
class StepPlan:
    """The rate and budget a run trains with, and how they were found (``unlearn.json``'s ``step_size``)."""

    lr: float
    lr_source: str  # "auto" (probed) or "manual"
    epochs: float
    epochs_source: str  # "auto", "manual" or "max_steps" (max_steps > 0 sets the budget)
    steps_per_epoch: int
    arrive_displacement: float | None  # D_arrive: probe_steps × the rate at which a probe arrives
    reach_epochs: float | None  # predicted epochs to the level at ``lr``
    level: float | None
    forget_nll: float | None  # probed forget rows' mean per-token NLL before any step
    retain_nll: float | None
    rows: str = ""
    probes: list[Probe] = field(default_factory=list)
    note: str | None = None

    @property
    def max_steps(self) -> int:
        if self.epochs_source == "max_steps":
            return max(1, round(self.epochs * self.steps_per_epoch))
        return max(1, math.ceil(self.epochs * self.steps_per_epoch))

    def to_dict(self) -> dict:
        return {**asdict(self), "max_steps": self.max_steps}

    @classmethod
    def from_dict(cls, d: dict) -> "StepPlan":
        d = {k: v for k, v in d.items() if k != "max_steps"}
        d["probes"] = [Probe(**p) for p in d.get("probes", [])]
        return cls(**d)


def probe_sample(encoded: Encoded, n: int, seed: int) -> Encoded:
    """A seeded sample of ``n`` rows of ``encoded`` (all of them when it has no more)."""
    if len(encoded) <= n:
        return encoded
    keep = sorted(random.Random(f"{seed}-probe").sample(range(len(encoded)), n))
    return encoded.subset(keep)


def _micro_batches(forget: Encoded, retain: Encoded | None, batch_size: int, collate, seed: int) -> list[dict]:
    quantiles = row_quantiles(forget, seed)
    out = []
    for start in range(0, len(forget), batch_size):
        items = []
        for i in range(start, min(start + batch_size, len(forget))):
            item = {"epoch": 0, "forget_input_ids": forget.input_ids[i], "forget_labels": forget.labels[i], "forget_quantile": quantiles[i]}
            if retain is not None:
                j = i % len(retain)
                item["retain_input_ids"], item["retain_labels"] = [retain.input_ids[j]], [retain.labels[j]]
            if forget.alternates is not None:
                item["alternate_input_ids"], item["alternate_labels"] = forget.alternates.input_ids[i], forget.alternates.labels[i]
            items.append(item)
        out.append(collate(items))
    return out


def row_nll(model, encoded: Encoded, collate, batch_size: int) -> list[float]:
    """Each row's mean per-token NLL over its labelled tokens, measured now (eval mode, no gradient).

    ``collate`` is the run's collator (:class:`unlearn.dataset.PairedCollator`, the trainer's
    ``data_collator``): rows are batched as training batches them."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out: list[float] = []
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                items = [{"forget_input_ids": encoded.input_ids[i], "forget_labels": encoded.labels[i]}
                         for i in range(start, min(start + batch_size, len(encoded)))]
                b = collate(items)
                logits = model(input_ids=b["forget_input_ids"].to(device), attention_mask=b["forget_attention_mask"].to(device)).logits
                nll, cnt = sequence_nll(logits, b["forget_labels"].to(device))
                out += (nll / cnt.clamp(min=1)).tolist()
    finally:
        model.train(was)
    return out


def share_to_level(before: list[float], after: list[float], level: float | list[float]) -> float:
    """Median over the rows below their level of the share of their way to it covered (``inf`` when any NLL is
    non-finite: the step diverged; NaN when no row is below its level). ``level``: one, or one per row."""
    levels = level if isinstance(level, (list, tuple)) else [level] * len(before)
    shares = []
    for b, a, lv in zip(before, after, levels):
        if not math.isfinite(a):
            return math.inf
        if b < lv:
            shares.append((a - b) / (lv - b))
    return statistics.median(shares) if shares else math.nan


def probe_levels(trainer, rows: Encoded) -> float | list[float] | None:
    """The level of each probe/watch row now: their spread quantiles of the trainer's reference
    distribution with spread targets, else the one level."""
    cfg = trainer.unlearn_config
    if trainer.forget_level is None or not cfg.forget_spread or not trainer.forget_distribution:
        return trainer.forget_level
    return levels_for(row_quantiles(rows, cfg.seed), trainer.forget_distribution)


def next_rate(probes: list[Probe]) -> float | None:
    """The next rate to probe, or ``None`` when the arrival rate is bracketed closely enough (module docstring).

    Up by ``CLIMB`` from the first rate until a probe arrives (down when the first one already
    did), then bisection in log space between the fastest probe that did not arrive and the
    slowest that did. Only the smallest arriving rate matters: far above it the response is
    not monotone (a broken model can land anywhere), so the search never goes there.
    """
    below = [q for q in probes if not q.arrived]
    above = [q for q in probes if q.arrived]
    if not above:
        rate = max(q.lr for q in probes) * CLIMB
        return rate if rate <= HIGHEST_RATE * 1.0001 else None
    hi = min(q.lr for q in above)
    under = [q.lr for q in below if q.lr < hi]
    if not under:
        rate = hi / CLIMB
        return rate if rate >= LOWEST_RATE * 0.9999 else None
    lo = max(under)
    if hi / lo <= CLIMB ** (1 / 2 ** BISECTIONS) * 1.0001:
        return None
    return math.sqrt(lo * hi)


def arrival_rate(probes: list[Probe]) -> float | None:
    """The rate at which a probe arrives: interpolated (log-log) between the fastest probe that did not
    arrive and the slowest that did; ``None`` when none arrived."""
    below = [q for q in probes if not q.arrived and math.isfinite(q.share) and q.share > 0]
    above = [q for q in probes if q.arrived]
    if not above:
        return None
    hi = min(above, key=lambda q: q.lr)
    lo = max((q for q in below if q.lr < hi.lr), key=lambda q: q.lr, default=None)
    if lo is None or not math.isfinite(hi.share) or hi.share <= lo.share:
        return hi.lr
    t = (math.log(ARRIVE) - math.log(lo.share)) / (math.log(hi.share) - math.log(lo.share))
    return math.exp(math.log(lo.lr) + min(max(t, 0.0), 1.0) * (math.log(hi.lr) - math.log(lo.lr)))


class _Prober:
    """Runs probes on one trainer: snapshot of the trainable weights, a fresh AdamW per probe."""

    def __init__(self, trainer, forget: Encoded, retain: Encoded | None, steps: int, before: list[float] | None = None):
        self.trainer, self.forget, self.retain, self.steps = trainer, forget, retain, steps
        self.model = trainer.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.saved = [p.detach().clone() for p in self.params]
        self.device = next(self.model.parameters()).device
        self.collate = trainer.data_collator
        cfg = trainer.unlearn_config
        self.batches = _micro_batches(forget, retain, cfg.batch_size, self.collate, cfg.seed)
        self.forget_levels = probe_levels(trainer, forget)
        self.retain_levels = probe_levels(trainer, retain) if retain is not None else None
        self.measure_batch = max(cfg.batch_size, 1)
        self.before = before if before is not None else self.nll(forget)
        self.retain_before = self.nll(retain) if retain is not None else None

    def nll(self, encoded: Encoded | None) -> list[float] | None:
        if encoded is None:
            return None
        return row_nll(self.model, encoded, self.collate, self.measure_batch)

    def restore(self) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, self.saved):
                p.copy_(s)
                p.grad = None

    def __call__(self, lr: float) -> Probe:
        t, args = self.trainer, self.trainer.args
        opt = torch.optim.AdamW(self.params, lr=lr, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                                weight_decay=t.unlearn_config.weight_decay)
        self.model.train()
        try:
            for _ in range(self.steps):
                for batch in self.batches:
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    with t.accelerator.autocast():
                        loss = t.probe_loss(self.model, batch) / len(self.batches)
                    if not torch.isfinite(loss):
                        return Probe(lr, math.inf, math.inf, None, math.inf)
                    loss.backward()
                if t.unlearn_config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.params, t.unlearn_config.max_grad_norm)
                if not all(torch.isfinite(p.grad).all() for p in self.params if p.grad is not None):
                    return Probe(lr, math.inf, math.inf, None, math.inf)
                opt.step()
                opt.zero_grad(set_to_none=True)
            after = self.nll(self.forget)
            retain_after = self.nll(self.retain)
            share = share_to_level(self.before, after, self.forget_levels)
            if retain_after is None:
                return Probe(lr, share, statistics.fmean(after), None)
            return Probe(lr, share, statistics.fmean(after), statistics.fmean(retain_after),
                         share_to_level(self.retain_before, retain_after, self.retain_levels))
        finally:
            del opt
            self.restore()


def plan_steps(trainer, forget: Encoded, retain: Encoded | None, *, level: float | None, steps_per_epoch: int, rows: str = "",
               forget_before: list[float] | None = None) -> StepPlan:
    """The rate and the budget of ``trainer``'s run (see the module docstring).

    ``forget`` / ``retain`` are the probe rows (already sampled); ``level`` the calibrated
    forget level at the start; ``steps_per_epoch`` the optimizer steps of one pass over the
    forget rows; ``forget_before`` the probe rows' NLL at the initial weights when the caller
    measured it already (the watch rows are the probe rows). With a numeric ``lr`` and
    ``epochs`` (or ``max_steps``) nothing is probed.
    """
    cfg = trainer.unlearn_config
    lr_auto, epochs_auto = cfg.lr == "auto", cfg.epochs == "auto" and cfg.max_steps <= 0
    if cfg.max_steps > 0:
        fixed_epochs, epochs_source = cfg.max_steps / steps_per_epoch, "max_steps"
    else:
        fixed_epochs, epochs_source = (None, "auto") if epochs_auto else (float(cfg.epochs), "manual")
    if not lr_auto and not epochs_auto:
        return StepPlan(float(cfg.lr), "manual", fixed_epochs, epochs_source, steps_per_epoch, None, None, level, None, None, rows)
    if level is None:
        raise AmnesiaError("lr auto / epochs auto aim the forget rows at the calibrated never-seen level, and this run has none "
                           "(forget_target none, or no reference documents): set unlearn.lr and unlearn.epochs (the paper: lr 1.5e-5, 8 epochs)")
    prober = _Prober(trainer, forget, retain, cfg.probe_steps, forget_before)
    probes: list[Probe] = []
    try:
        levels = prober.forget_levels if isinstance(prober.forget_levels, list) else [level] * len(prober.before)
        if any(b < lv for b, lv in zip(prober.before, levels)):
            rate = FIRST_RATE
            while rate is not None:
                probes.append(prober(rate))
                rate = next_rate(probes)
    finally:
        prober.restore()
    arrive = arrival_rate(probes)
    displacement = arrive * cfg.probe_steps if arrive is not None else None
    spe = steps_per_epoch
    note = None
    if not probes:
        note = (f"the probed forget rows are already at or past the never-seen level ({level:.3g} nats/token): "
                "there is nothing to forget on them; kept the first probe rate")
        lr = FIRST_RATE if lr_auto else float(cfg.lr)
        reach = None
    elif displacement is None:
        lr = max(q.lr for q in probes) if lr_auto else float(cfg.lr)
        note = (f"no probe reached the never-seen level, up to lr {max(q.lr for q in probes):.3g} "
                f"(median share of the way {max((q.share for q in probes if math.isfinite(q.share)), default=0.0):.2f}): "
                "the selected weights may not be able to forget these rows — select more layers or kind all")
        reach = None
    else:
        lr = displacement / (CONSISTENCY * cfg.reach_epochs * spe) if lr_auto else float(cfg.lr)
        reach = displacement / (CONSISTENCY * lr * spe)
    if epochs_auto:
        need = reach if reach is not None else MAX_EPOCHS / cfg.budget_factor
        epochs = min(MAX_EPOCHS, max(1.0, round(need * cfg.budget_factor, 2)))
    else:
        epochs = fixed_epochs
    return StepPlan(
        lr=lr, lr_source="auto" if lr_auto else "manual", epochs=epochs, epochs_source=epochs_source, steps_per_epoch=spe,
        arrive_displacement=displacement, reach_epochs=reach, level=level,
        forget_nll=statistics.fmean(prober.before),
        retain_nll=statistics.fmean(prober.retain_before) if prober.retain_before else None,
        rows=rows, probes=probes, note=note,
    )


class ArrivalWatch(TrainerCallback):
    """Every ``every`` optimizer steps: the watch rows' share of the way to the current level.

    The watch rows are the probe's forget rows (validation rows, part of the request). The first
    time their median row is at its level (``HOLD_AT``), the rate is multiplied by
    ``hold_factor``: arriving needs the full rate, holding the rows at a level that moves with
    the model needs less, and a smaller rate there means smaller swings around the level
    (``hold_factor`` 1 keeps the rate constant). The optimizer's and the scheduler's rates
    both change, so a checkpoint resumes at the rate it was written with.
    """

    def __init__(self, trainer, rows: Encoded, before: list[float], *, every: int, hold_factor: float):
        self.trainer, self.rows, self.before, self.every, self.hold_factor = trainer, rows, before, max(1, every), hold_factor
        self.history: list[list[float]] = []
        self.arrived_step: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        if state.global_step % self.every or t.stop_reason is not None or t.forget_level is None:
            return
        model = t.accelerator.unwrap_model(t.model)
        share = share_to_level(self.before, row_nll(model, self.rows, t.data_collator, t.unlearn_config.batch_size), probe_levels(t, self.rows))
        self.history.append([state.global_step, share])
        if self.arrived_step is None and math.isfinite(share) and share >= HOLD_AT:
            self.arrived_step = state.global_step
            if self.hold_factor != 1:
                for group in t.optimizer.param_groups:
                    group["lr"] *= self.hold_factor
                if t.lr_scheduler is not None and hasattr(t.lr_scheduler, "base_lrs"):
                    t.lr_scheduler.base_lrs = [lr * self.hold_factor for lr in t.lr_scheduler.base_lrs]

    def state_dict(self) -> dict:
        return {"history": self.history, "arrived_step": self.arrived_step, "every": self.every, "hold_factor": self.hold_factor}

    def load_state_dict(self, state: dict) -> None:
        self.history = [list(x) for x in state.get("history", [])]
        self.arrived_step = state.get("arrived_step")


NOT_MOVED = 0.10  # below this share of the way to the level: nothing was forgotten
SHORT = 0.70  # below this: stopped short of never-seen
OVERSHOT_AUC = 0.30  # a validation MIA AUC below this: members less likely than never-seen text
LEVEL_ROSE = 1.2  # a level this many times its value before training is named in the note (the unlearning moved never-seen text too)
ALREADY = 0.9  # forget rows starting at this share of the level (measured before training) or above had little to forget


def outcome(before: list[float], after: list[float], level_before: float | None, level_after: float | None, *,
            validation_auc: float | None = None, lr: float | None = None) -> dict:
    """Did forgetting arrive? The forget rows' NLL before and after against the never-seen level.

    ``moved`` is the share of the way from the rows' mean NLL before to the level (as measured at
    the end) covered by their mean NLL after, in NLL (what membership inference ranks). The
    verdict is ``not_moved`` (< 10 %), ``short`` (< 70 %, or the validation MIA AUC above 0.7:
    most forget documents still more likely than never-seen ones, whatever the mean did),
    ``overshot`` (the validation MIA AUC below 0.3: forget documents now less likely than
    never-seen ones), ``already`` (the rows started within a tenth of the level: an earlier
    unlearning took them there — a later step of MUSE's C6 — or the model never learned them)
    or ``reached``; ``note``
    is one line saying so and what to change (``None`` when it reached the level, unless the level
    itself rose more than ``LEVEL_ROSE`` times: then the note says that never-seen text was lost too).
    """
    mean_b, mean_a = statistics.fmean(before), statistics.fmean(after)
    level = level_after if level_after is not None else level_before
    out = {"forget_nll_before": mean_b, "forget_nll_after": mean_a, "level_before": level_before, "level_after": level_after,
           "validation_auc": validation_auc, "moved": None, "verdict": None, "note": None}
    if level is None or not math.isfinite(mean_a):
        return out
    gap = level - mean_b
    moved = (mean_a - mean_b) / gap if gap > 0 else 1.0
    out["moved"] = moved
    rate = f"lr {lr:.3g}" if lr is not None else "the learning rate"
    where = f"forget rows' NLL {mean_b:.3g} → {mean_a:.3g} nats/token against a never-seen level of {level:.3g}"
    # the unlearning made never-seen text less likely too: the level moved away from the rows it measures
    rose = level_before is not None and level_after is not None and level_after > LEVEL_ROSE * level_before
    if rose:
        where += f", which rose from {level_before:.3g} during unlearning as never-seen text became less likely too"
    if validation_auc is not None and validation_auc < OVERSHOT_AUC:
        out["verdict"] = "overshot"
        out["note"] = (f"forgotten past never-seen text: validation members are now less likely than never-seen documents "
                       f"(validation MIA AUC {validation_auc:.2f}; {where}) — membership inference sees that too; "
                       f"lower {rate} (or leave it auto with a larger reach_epochs) or keep forget_mode pull")
    elif level_before is not None and mean_b >= ALREADY * level_before:
        out["verdict"] = "already"
        out["note"] = (f"the forget rows were already near the never-seen level before this run ({where}): there was little to forget on them "
                       "(an earlier unlearning took them there, or the model never learned them) — read the test scores, not this run's progress")
    elif moved < NOT_MOVED:
        out["verdict"] = "not_moved"
        out["note"] = (f"forget NLL moved {100 * max(moved, 0):.1f} % of the way to the never-seen level ({where}): nothing was forgotten — "
                       f"the step size is too small for this model ({rate}); leave lr auto or raise it, or raise epochs")
    elif moved < SHORT or (validation_auc is not None and validation_auc > 1 - OVERSHOT_AUC):
        out["verdict"] = "short"
        auc = f"validation MIA AUC {validation_auc:.2f}; " if validation_auc is not None else ""
        out["note"] = (f"forget NLL moved {100 * moved:.0f} % of the way to the never-seen level ({auc}{where}): the forget rows are still "
                       f"more likely than never-seen text — raise epochs (or budget_factor), or the rate ({rate})")
    else:
        out["verdict"] = "reached"
        if rose:
            out["note"] = (f"the forget rows reached the never-seen level, but that level rose from {level_before:.3g} to {level_after:.3g} "
                           f"nats/token during unlearning (×{level_after / level_before:.2f}): never-seen text of this kind became less likely too, "
                           "so part of what membership inference sees is the model losing such text in general, which relearning on any "
                           "text of the kind can undo — the audit's relearn_related attack measures it (docs/audit.md)")
    return out


__all__ = ["ArrivalWatch", "Probe", "StepPlan", "arrival_rate", "next_rate", "outcome", "plan_steps", "probe_sample", "row_nll", "share_to_level"]
