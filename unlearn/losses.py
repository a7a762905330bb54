"""One small function per unlearning loss, plus the sha256 α schedule.

Notation: ``CE_f`` / ``CE_r`` are the mean next-token cross-entropies on the *output* tokens of
a forget / retain micro-batch (prompt tokens carry the label ``-100`` and never count).

=========  ===============================================================================
method     loss
=========  ===============================================================================
sha256     ``−CE_f + α·CE_r`` with the adaptive α of :func:`sha256_alpha` (the paper)
ga         ``−CE_f`` (gradient ascent)
gd         ``−CE_f + CE_r`` (gradient difference)
kl         ``−CE_f + KL(p_ref ‖ p_θ)`` on the retain output tokens, ``p_ref`` the frozen initial model
npo        ``(2/β)·mean log(1 + (π_θ(y|x)/π_ref(y|x))^β) + CE_r`` on forget rows (NPO, Zhang et al. 2024)
=========  ===============================================================================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AlphaParams  # noqa: F401 - part of this module's API

IGNORE = -100


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed next-token NLL over labelled positions, and the number of those positions.

    ``logits`` is ``[batch, seq, vocab]``, ``labels`` ``[batch, seq]`` with ``-100`` where no
    loss is taken; position ``t``'s logits predict label ``t+1`` (the HF causal-LM shift).
    Computed in float32 whatever the logits' dtype.
    """
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)).float(),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(shift_labels.shape)
    mask = shift_labels != IGNORE
    return (nll * mask).sum(dim=1), mask.sum(dim=1)


def ce_loss(nll_sum: torch.Tensor, counts: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Token-mean cross-entropy over the rows of a micro-batch (optionally only ``rows``, a bool mask).

    With ``rows`` all false the result is a zero that still depends on the graph (no gradient).
    """
    if rows is not None:
        nll_sum = nll_sum * rows
        counts = counts * rows
    return nll_sum.sum() / counts.sum().clamp(min=1)


def forget_signs(row_nll: torch.Tensor, rows: torch.Tensor, level: float | torch.Tensor | None, mode: str = "stop") -> torch.Tensor:
    """Per-row sign of the forget term under a calibrated target ``level`` (a per-token NLL, or one per row).

    ``row_nll`` is each forget row's mean NLL over its forget tokens, ``rows`` the rows that have
    any. Without a level every row is pushed (``+1``: its NLL goes up). With one, a row whose NLL
    has reached the level stops (``0``) under ``mode="stop"``, or is pulled back down (``-1``)
    under ``mode="pull"``, so the forget rows settle where text the model never saw is.
    """
    push = rows.float()
    if level is None:
        return push
    below = (row_nll.detach() < level) & rows
    if mode == "pull":
        return torch.where(below, 1.0, torch.where(rows, -1.0, 0.0))
    return below.float()


def signed_ce(nll_sum: torch.Tensor, counts: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``Σ s·NLL / Σ |s|·tokens``: the token-mean CE of pushed rows minus that of pulled ones.

    With every sign ``+1`` this is :func:`ce_loss`; ``−signed_ce`` is the calibrated ``−CE_f``.
    """
    return (nll_sum * signs).sum() / (counts * signs.abs()).sum().clamp(min=1)


def ga_loss(ce_forget: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: ``−CE_f``."""
    return -ce_forget


def gd_loss(ce_forget: torch.Tensor, ce_retain: torch.Tensor) -> torch.Tensor:
    """Gradient difference: ``−CE_f + CE_r``."""
    return -ce_forget + ce_retain


def sha256_loss(ce_forget: torch.Tensor, ce_retain: torch.Tensor, alpha: float) -> torch.Tensor:
    """The paper's joint loss: ``−CE_f + α·CE_r`` (α from :func:`sha256_alpha`)."""
    return -ce_forget + alpha * ce_retain


def kl_divergence(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labelled positions of ``KL(p_ref ‖ p_θ)`` of the next-token distributions."""
    mask = labels[:, 1:] != IGNORE
    logp = F.log_softmax(logits[:, :-1, :].float(), dim=-1)[mask]
    ref_logp = F.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)[mask]
    if logp.numel() == 0:
        return logits.sum() * 0.0
    return F.kl_div(logp, ref_logp, reduction="batchmean", log_target=True)


def kl_loss(ce_forget: torch.Tensor, kl_retain: torch.Tensor) -> torch.Tensor:
    """``−CE_f + KL(p_ref ‖ p_θ)`` on retain rows."""
    return -ce_forget + kl_retain


def npo_loss(nll_forget: torch.Tensor, ref_nll_forget: torch.Tensor, beta: float, rows: torch.Tensor | None = None,
             counts: torch.Tensor | None = None) -> torch.Tensor:
    """Negative preference optimization on forget rows (sequence level).

    ``nll_forget`` / ``ref_nll_forget`` are per-row summed NLLs of the output under the model
    and the frozen reference; ``log π_θ/π_ref = ref_nll − nll``, and
    ``L = −(2/β)·mean logσ(−β·log π_θ/π_ref) = (2/β)·mean log(1 + (π_θ/π_ref)^β)``.
    At the start (θ = ref) the loss is ``(2/β)·log 2`` and its gradient is half that of
    gradient ascent; it flattens as the forget rows become unlikely, which keeps NPO from
    collapsing the model.

    ``rows`` may be signs from :func:`forget_signs`: rows with ``+1`` take the NPO term, rows
    with ``-1`` (pulled back) their token-mean NLL (``counts`` tokens), rows with ``0`` nothing;
    the mean is over the rows that take part.
    """
    log_ratio = ref_nll_forget - nll_forget
    per_row = -F.logsigmoid(-beta * log_ratio) * (2.0 / beta)
    if rows is None:
        return per_row.mean()
    rows = rows.float()
    pull = nll_forget / counts.clamp(min=1) if counts is not None else torch.zeros_like(per_row)
    per_row = torch.where(rows > 0, per_row, torch.where(rows < 0, pull, torch.zeros_like(per_row)))
    return per_row.sum() / rows.abs().sum().clamp(min=1)


# --------------------------------------------------------------------------- α schedule


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
