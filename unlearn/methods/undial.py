"""UNDIAL (Dong et al. 2025, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning
in Large Language Models", NAACL 2025; github.com/dong-river/LLM_unlearning; OpenUnlearning's
``UNDIAL``): self-distillation on the forget rows toward the frozen initial model's logits with the
true token's logit lowered by β — a bounded target, so the model forgets the answer without being
pushed towards collapse. ``mean_t −Σ_v softmax(z_ref − β·e_y)_v·log p_θ,v``; as the reference's
TOFU config (α 0), no retain term. Default β 10.

Calibrated forgetting applies per row: rows past the never-seen level are pulled back by their
NLL, the others take the distillation term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from .base import Method, register


def undial_tokens(logits, ref_logits, labels, beta: float):
    """Per position ``[batch, seq-1]``: ``−Σ_v softmax(z_ref − β·e_y)_v·log softmax(z)_v``, 0 where unlabelled."""
    import torch
    import torch.nn.functional as F

    from ..losses import IGNORE

    target = labels[:, 1:]
    mask = target != IGNORE
    teacher = ref_logits[:, :-1, :].float().detach()
    teacher = teacher.scatter_add(-1, target.clamp(min=0).unsqueeze(-1), torch.full_like(teacher[..., :1], -float(beta)))
    term = -(F.softmax(teacher, dim=-1) * F.log_softmax(logits[:, :-1, :].float(), dim=-1)).sum(-1)
    return torch.where(mask, term, torch.zeros_like(term))


@dataclass(frozen=True)
class UNDIALSettings:
    beta: float = field(default=10.0, metadata={"help": "how far β the true token's logit is lowered in the distillation target"})

    def check(self) -> None:
        if not self.beta >= 0:
            raise AmnesiaError(f"method_args beta {self.beta}: expected a number >= 0")


@register
class UNDIAL(Method):
    name = "undial"
    summary = "UNDIAL: self-distillation toward the frozen model's logits with the true token lowered by β (forget rows only)"
    needs_retain = False
    reference = "forget"
    Settings = UNDIALSettings
    logs = {"undial": ""}

    def loss(self, batch):
        from ..losses import calibrated_tokens, token_nll

        nll, mask = token_nll(batch.forget_logits, batch.forget_labels)
        per_token = undial_tokens(batch.forget_logits, batch.reference_logits("forget"), batch.forget_labels, self.settings.beta)
        term = calibrated_tokens(per_token, nll, mask, batch.signs)
        return term, {"undial": term.item()}
