"""Weighted gradient ascent, WGA (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", ICLR 2025 — the G-effect paper; github.com/tmlr-group/G-effect;
OpenUnlearning's ``WGA``): gradient ascent with each forget token weighted by its own probability
``p^β`` (no gradient through the weight), so tokens already unlikely stop pushing —
``γ·mean_t(−p_t^β·NLL_t) + α·CE_r``.

Defaults are the reference's (β 1, γ 1, α 1). Calibrated forgetting applies per row: the tokens of
rows past the never-seen level are pulled back, the others take the weighted ascent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from .base import ForgetRetain, ForgetRetainWeights, register


def token_weighted_ascent(batch, weight) -> object:
    """``mean_t(−w_t·NLL_t)`` over the forget tokens, ``w = weight(p)`` of each token's probability
    (detached), under the calibrated signs (:func:`unlearn.losses.calibrated_tokens`)."""
    import torch

    from ..losses import calibrated_tokens, token_nll

    nll, mask = token_nll(batch.forget_logits, batch.forget_labels)
    w = weight(torch.exp(-nll.detach()))
    return calibrated_tokens(-w * nll, nll, mask, batch.signs)


@dataclass(frozen=True)
class WGASettings(ForgetRetainWeights):
    beta: float = field(default=1.0, metadata={"help": "exponent β of the token weight p^β"})

    def check(self) -> None:
        super().check()
        if not self.beta >= 0:
            raise AmnesiaError(f"method_args beta {self.beta}: expected a number >= 0")


@register
class WGA(ForgetRetain):
    name = "wga"
    summary = "weighted gradient ascent: each forget token's ascent weighted by p^β, + α·CE_r (--method-arg beta=, gamma=, alpha=)"
    Settings = WGASettings
    logs = {"wga": ""}

    def forget_term(self, batch):
        return token_weighted_ascent(batch, lambda p: p ** self.settings.beta)
