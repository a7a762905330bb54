"""PDU, primal–dual unlearning (Entesari et al. 2025, "Constrained Entropic Unlearning: A
Primal-Dual Framework for Large Language Models", arXiv:2506.05314; OpenUnlearning's ``PDU``):
forgetting as a constrained problem. The forget term flattens the model's next-token
distribution on the forget answers — the mean of ``(max_v z_v − mean_v z_v)²`` over their
positions — subject to the retain loss staying below ``ε``; the constraint's multiplier λ
(starting at α) is learned by dual ascent, ``λ ← max(0, λ + η·(CE_r − ε))`` after every
micro-batch once ``dual_warmup_epochs`` have passed: ``γ·L_f + λ·(CE_r − ε)``.

Defaults are OpenUnlearning's (γ 1, α 1, η 1, warm-up 5 epochs, updates per step). ε has no
default there; here ``retain_loss_eps`` unset means the retain cross-entropy of the first
micro-batch — the initial model's own level, so the constraint reads "do not get worse on the
retain rows" (recorded in ``unlearn.json``). **Deliberate difference:** the reference flattens the
logits at every position of the forget rows (prompt and padding included); here only the
answer tokens (the labelled positions every other method reads). λ and ε go into checkpoints,
so a resumed run continues the same dual ascent. Calibrated forgetting applies per row: rows past
the never-seen level are pulled back by their NLL, the others take the flattening term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from .base import Method, register


def flatness_tokens(logits, labels):
    """Per position ``[batch, seq-1]``: ``(max_v z_v − mean_v z_v)²`` of the logits that predict a labelled token, 0 elsewhere."""
    import torch

    from ..losses import IGNORE

    z = logits[:, :-1, :].float()
    term = (z.max(dim=-1).values - z.mean(dim=-1)) ** 2
    return torch.where(labels[:, 1:] != IGNORE, term, torch.zeros_like(term))


@dataclass(frozen=True)
class PDUSettings:
    retain_loss_eps: float | None = field(default=None, metadata={"help": "the retain-loss bound ε (unset: the first micro-batch's retain CE, the initial model's level)"})
    dual_step_size: float = field(default=1.0, metadata={"help": "dual ascent step η of the multiplier λ"})
    dual_warmup_epochs: int = field(default=5, metadata={"help": "epochs before λ starts to move (0-based epoch >= this)"})
    gamma: float = field(default=1.0, metadata={"help": "weight γ of the forget term"})
    alpha: float = field(default=1.0, metadata={"help": "initial multiplier λ of the retain constraint"})

    def check(self) -> None:
        if min(self.dual_step_size, self.gamma, self.alpha) < 0 or self.dual_warmup_epochs < 0:
            raise AmnesiaError(f"method_args dual_step_size {self.dual_step_size}, dual_warmup_epochs {self.dual_warmup_epochs}, "
                               f"gamma {self.gamma}, alpha {self.alpha}: expected numbers >= 0")


@register
class PDU(Method):
    name = "pdu"
    summary = "primal–dual: flatten the forget answers' logits s.t. CE_r <= ε, learned multiplier λ (--method-arg retain_loss_eps=, dual_step_size=, …)"
    Settings = PDUSettings
    logs = {"pdu": "", "lambda": "λ"}
    ranges = ("lambda",)

    def __init__(self, config, settings=None):
        super().__init__(config, settings)
        self.multiplier = self.settings.alpha
        self.eps = self.settings.retain_loss_eps

    def loss(self, batch):
        from ..losses import calibrated_tokens, token_nll

        nll, mask = token_nll(batch.forget_logits, batch.forget_labels)
        term = calibrated_tokens(flatness_tokens(batch.forget_logits, batch.forget_labels), nll, mask, batch.signs)
        if self.eps is None:
            self.eps = batch.ce_retain.item()
        slack = batch.ce_retain - self.eps
        loss = self.settings.gamma * term + self.multiplier * slack
        used = self.multiplier
        if batch.epoch >= self.settings.dual_warmup_epochs:
            self.multiplier = max(0.0, self.multiplier + self.settings.dual_step_size * slack.item())
        return loss, {"pdu": term.item(), "lambda": used}

    def state_dict(self) -> dict:
        return {"multiplier": self.multiplier, "eps": self.eps}

    def load_state_dict(self, state: dict) -> None:
        self.multiplier = state.get("multiplier", self.settings.alpha)
        self.eps = state.get("eps", self.settings.retain_loss_eps)

    def record(self) -> dict:
        return {"pdu": {"retain_loss_eps": self.eps, "multiplier": self.multiplier}}
