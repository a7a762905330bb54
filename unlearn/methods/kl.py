"""``−CE_f + KL(p_ref ‖ p_θ)`` on the retain rows' labelled tokens, ``p_ref`` the frozen initial model
(the shared task's KL baseline; TOFU's "KL")."""

from __future__ import annotations

from .base import Method, register


def kl_divergence(logits, ref_logits, labels):
    """Mean over labelled positions of ``KL(p_ref ‖ p_θ)`` of the next-token distributions."""
    import torch.nn.functional as F

    from ..losses import IGNORE

    mask = labels[:, 1:] != IGNORE
    logp = F.log_softmax(logits[:, :-1, :].float(), dim=-1)[mask]
    ref_logp = F.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)[mask]
    if logp.numel() == 0:
        return logits.sum() * 0.0
    return F.kl_div(logp, ref_logp, reduction="batchmean", log_target=True)


@register
class KLRetain(Method):
    name = "kl"
    summary = "−CE_f + KL(frozen initial model ‖ model) on retain rows"
    reference = "retain"
    logs = {"kl_retain": "kl"}

    def loss(self, batch):
        kl = kl_divergence(batch.retain_logits, batch.reference_logits("retain"), batch.retain_labels)
        return -batch.ce_forget + kl, {"kl_retain": kl.item()}
