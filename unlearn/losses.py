"""What every unlearning method's loss is built from: per-row NLLs and the calibrated forget signs.

Notation: ``CE_f`` / ``CE_r`` are the mean next-token cross-entropies on the *labelled* tokens of
a forget / retain micro-batch (unlabelled tokens carry ``-100`` and never count). The methods
themselves — one module each — are in :mod:`unlearn.methods`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
