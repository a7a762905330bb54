"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for
LLM Unlearning"; github.com/OPTML-Group/Unlearn-Simple; OpenUnlearning's ``SimNPO``): NPO without
the reference model, length-normalised, with a margin — per forget row
``−(2/β)·logσ(β·(NLL/|y| − δ))``, weighted ``γ``, plus ``α·CE_r``.

Defaults are OpenUnlearning's TOFU ones (β 4.5, δ 0, γ 0.125, α 1). Calibrated forgetting applies
per row as for NPO: rows past the never-seen level are pulled back, the others take the term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from .base import ForgetRetain, ForgetRetainWeights, register


def simnpo_loss(nll_sum, counts, beta: float, delta: float):
    """Per-row ``−(2/β)·logσ(β·(nll_sum/counts − δ))``: the SimNPO term of each forget row."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * (nll_sum / counts.clamp(min=1) - delta)) * (2.0 / beta)


@dataclass(frozen=True)
class SimNPOSettings(ForgetRetainWeights):
    gamma: float = field(default=0.125, metadata={"help": "weight γ of the forget term"})
    beta: float = field(default=4.5, metadata={"help": "inverse temperature β of the length-normalised log-likelihood"})
    delta: float = field(default=0.0, metadata={"help": "margin δ (the paper's γ) subtracted from the per-token NLL"})

    def check(self) -> None:
        super().check()
        if not self.beta > 0:
            raise AmnesiaError(f"method_args beta {self.beta}: expected a positive number")


@register
class SimNPO(ForgetRetain):
    name = "simnpo"
    summary = "SimNPO: reference-free, length-normalised NPO, γ·L_f + α·CE_r (--method-arg beta=, delta=, gamma=, alpha=)"
    Settings = SimNPOSettings
    logs = {"simnpo": ""}

    def forget_term(self, batch):
        from ..losses import calibrated_rows

        s = self.settings
        return calibrated_rows(simnpo_loss(batch.forget_nll, batch.forget_tokens, s.beta, s.delta), batch.signs, batch.forget_nll, batch.forget_tokens)
