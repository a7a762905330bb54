"""The paper's method (Agrawal & Huang, "Selective Amnesia", SemEval-2025 Task 4): ``−CE_f + α·CE_r``
with an adaptive α that grows when the retain loss rises above its first-epoch level.

Its settings (:class:`AlphaParams`) come from UnlearnConfig's ``alpha_*`` fields, the CLI's
``--alpha-*`` options (fields of UnlearnConfig since before methods were plug-ins).
"""

from __future__ import annotations

import dataclasses
import math

from dataclasses import dataclass

from .base import Method, no_method_args, register


@dataclass(frozen=True)
class AlphaParams:
    """Constants of the α schedule. ``decimals``: round α (the authors' code rounds to 1)."""

    a: float = 0.3
    b: float = 6.0
    c: float = 0.8
    alpha_min: float = 1.2
    alpha_max: float = 2.8
    decimals: int | None = None

    @classmethod
    def paper(cls) -> "AlphaParams":
        """The paper's schedule: clip to [1.2, 2.8], no rounding."""
        return cls()

    @classmethod
    def code(cls) -> "AlphaParams":
        """The authors' released code: clip to [1.2, 2.3] and round α to one decimal."""
        return cls(alpha_max=2.3, decimals=1)


def sha256_alpha(ce_retain: float, l_ref: float | None, params: AlphaParams = AlphaParams()) -> float:
    """α for one step of the sha256 loss.

    ``l_ref`` is ``None`` during the first epoch (→ ``α_min``); afterwards α is
    ``clip(a·b^(CE_r − L_ref) + c, α_min, α_max)`` when ``CE_r > L_ref`` and ``α_min`` otherwise,
    rounded to ``params.decimals`` when set (the code variant). A non-finite ``CE_r`` gives ``α_min``.
    """
    p = params
    if l_ref is None or not math.isfinite(ce_retain) or ce_retain <= l_ref:
        return p.alpha_min
    try:
        raw = p.a * p.b ** (ce_retain - l_ref) + p.c
    except OverflowError:
        raw = math.inf
    alpha = min(max(raw, p.alpha_min), p.alpha_max)
    if p.decimals is not None:
        alpha = round(alpha, p.decimals)
    return float(alpha)


class AlphaSchedule:
    """The stateful part of the α schedule: the reference retain loss ``L_ref``.

    :meth:`alpha` is called once per micro-batch with its epoch index (0-based) and ``CE_r``.
    In epoch 0 it returns ``α_min`` and accumulates ``CE_r``; from epoch 1 on ``L_ref`` is the
    mean of those values, fixed. :meth:`state_dict` / :meth:`load_state_dict` carry it through
    checkpoints, so a resumed run computes the same α as an uninterrupted one.
    """

    def __init__(self, params: AlphaParams = AlphaParams()):
        self.params = params
        self.ref_sum = 0.0
        self.ref_count = 0
        self.l_ref: float | None = None

    def alpha(self, epoch: int, ce_retain: float) -> float:
        if epoch == 0:
            if math.isfinite(ce_retain):
                self.ref_sum += ce_retain
                self.ref_count += 1
            return self.params.alpha_min
        if self.l_ref is None:
            self.l_ref = self.ref_sum / self.ref_count if self.ref_count else None
        return sha256_alpha(ce_retain, self.l_ref, self.params)

    def state_dict(self) -> dict:
        return {"ref_sum": self.ref_sum, "ref_count": self.ref_count, "l_ref": self.l_ref}

    def load_state_dict(self, state: dict) -> None:
        self.ref_sum = float(state["ref_sum"])
        self.ref_count = int(state["ref_count"])
        self.l_ref = None if state["l_ref"] is None else float(state["l_ref"])


@register
class SHA256(Method):
    name = "sha256"
    summary = "the paper's joint loss, −CE_f + α·CE_r with the adaptive α (--alpha-*)"
    Settings = AlphaParams
    logs = {"alpha": "α"}
    ranges = ("alpha",)

    def __init__(self, config, settings=None):
        super().__init__(config, settings)
        self.schedule = AlphaSchedule(self.settings)

    @classmethod
    def settings_from(cls, config):
        no_method_args(cls, config, "alpha_a, alpha_b, alpha_c, alpha_min, alpha_max, alpha_variant")
        return config.alpha_params()

    def loss(self, batch):
        alpha = self.schedule.alpha(batch.epoch, batch.ce_retain.item())
        return -batch.ce_forget + alpha * batch.ce_retain, {"alpha": alpha}

    def state_dict(self) -> dict:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state)

    def record(self) -> dict:
        p = self.settings
        return {"alpha_params": dataclasses.asdict(p), "alpha": {"l_ref": self.schedule.l_ref, "alpha_min": p.alpha_min, "alpha_max": p.alpha_max}}
