"""CE-U, cross-entropy unlearning (Yang et al. 2025, "CE-U: Cross Entropy Unlearning",
arXiv:2503.01224; OpenUnlearning's ``CEU``): at every forget token, cross-entropy toward the
model's own next-token distribution with the true token removed (its logit set to −∞, no
gradient through the target) — the model learns to put its mass anywhere but on the answer,
without the unbounded push of gradient ascent. As the reference, the first
``ignore_first_n_answer_tokens`` (1) answer tokens of each row are left out, and no retain term.

Calibrated forgetting applies per row: rows past the never-seen level are pulled back by their
NLL, the others take the CE-U term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from .base import Method, register


def drop_first_answer_tokens(labels, n: int):
    """``labels`` with the first ``n`` labelled positions of each row unlabelled."""
    from ..losses import IGNORE

    labelled = labels != IGNORE
    return labels.masked_fill(labelled & (labelled.cumsum(dim=-1) <= n), IGNORE)


def ceu_tokens(logits, labels):
    """Per position ``[batch, seq-1]``: ``−Σ_v q_v·log p_v`` with ``q = softmax(logits, true token at −∞)`` (detached), 0 where unlabelled."""
    import torch
    import torch.nn.functional as F

    from ..losses import IGNORE

    shift = logits[:, :-1, :].float()
    target = labels[:, 1:]
    mask = target != IGNORE
    removed = shift.detach().scatter(-1, target.clamp(min=0).unsqueeze(-1), float("-inf"))
    q = F.softmax(removed, dim=-1)
    term = -(q * F.log_softmax(shift, dim=-1)).nan_to_num(0.0).sum(-1)
    return torch.where(mask, term, torch.zeros_like(term))


@dataclass(frozen=True)
class CEUSettings:
    ignore_first_n_answer_tokens: int = field(default=1, metadata={"help": "answer tokens at the start of each row left out (the reference's footnote trick)"})

    def check(self) -> None:
        if self.ignore_first_n_answer_tokens < 0:
            raise AmnesiaError(f"method_args ignore_first_n_answer_tokens {self.ignore_first_n_answer_tokens}: expected an integer >= 0")


@register
class CEU(Method):
    name = "ceu"
    summary = "CE-U: cross-entropy toward the model's own distribution without the true token (forget rows only)"
    needs_retain = False
    Settings = CEUSettings
    logs = {"ceu": ""}

    def loss(self, batch):
        from ..losses import calibrated_tokens, token_nll

        labels = drop_first_answer_tokens(batch.forget_labels, self.settings.ignore_first_n_answer_tokens)
        nll, mask = token_nll(batch.forget_logits, labels)
        term = calibrated_tokens(ceu_tokens(batch.forget_logits, labels), nll, mask, batch.signs)
        return term, {"ceu": term.item()}
