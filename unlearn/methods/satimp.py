"""SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning",
ICML 2025; github.com/tmlr-group/SatImp; OpenUnlearning's ``SatImp``): gradient ascent with each
forget token weighted by saturation and importance, ``p^β₁·(1 − p)^β₂`` of its probability (no
gradient through the weight) — ``γ·mean_t(−w_t·NLL_t) + α·CE_r``.

Defaults are OpenUnlearning's (β₁ 5, β₂ 1, γ 0.1, α 1). Calibrated forgetting as for :mod:`.wga`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from .base import ForgetRetain, ForgetRetainWeights, register
from .wga import token_weighted_ascent


@dataclass(frozen=True)
class SatImpSettings(ForgetRetainWeights):
    gamma: float = field(default=0.1, metadata={"help": "weight γ of the forget term"})
    beta1: float = field(default=5.0, metadata={"help": "saturation exponent β₁ of p"})
    beta2: float = field(default=1.0, metadata={"help": "importance exponent β₂ of (1 − p)"})

    def check(self) -> None:
        super().check()
        if not (self.beta1 >= 0 and self.beta2 >= 0):
            raise AmnesiaError(f"method_args beta1 {self.beta1}, beta2 {self.beta2}: expected numbers >= 0")


@register
class SatImp(ForgetRetain):
    name = "satimp"
    summary = "SatImp: forget tokens' ascent weighted by p^β₁·(1−p)^β₂, + α·CE_r (--method-arg beta1=, beta2=, gamma=, alpha=)"
    Settings = SatImpSettings
    logs = {"satimp": ""}

    def forget_term(self, batch):
        s = self.settings
        return token_weighted_ascent(batch, lambda p: p ** s.beta1 * (1 - p) ** s.beta2)
