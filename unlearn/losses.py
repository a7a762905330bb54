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


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token NLL ``[batch, seq-1]`` (float32; 0 where unlabelled) and the labelled mask."""
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1, :].reshape(-1, logits.size(-1)).float(), shift_labels.reshape(-1),
                          ignore_index=IGNORE, reduction="none").view(shift_labels.shape)
    return nll, shift_labels != IGNORE


def calibrated_rows(per_row: torch.Tensor, signs: torch.Tensor, nll_sum: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """A per-row forget term under the calibrated signs (:func:`forget_signs`): rows with ``+1`` take
    ``per_row``, rows with ``-1`` (past the level) their token-mean NLL (pulled back down), rows with
    ``0`` nothing; the mean over the rows that take part. With every sign ``+1``: ``per_row.mean()``."""
    signs = signs.float()
    pull = nll_sum / counts.clamp(min=1)
    per_row = torch.where(signs > 0, per_row, torch.where(signs < 0, pull, torch.zeros_like(per_row)))
    return per_row.sum() / signs.abs().sum().clamp(min=1)


def calibrated_tokens(per_token: torch.Tensor, nll: torch.Tensor, mask: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """A per-token forget term ``[batch, seq-1]`` under the calibrated signs: the tokens of ``+1`` rows
    take ``per_token``, those of ``-1`` rows their NLL (pulled back down), those of ``0`` rows nothing;
    the mean over the tokens that take part. With every sign ``+1``: the mean over labelled tokens."""
    s = signs.float()[:, None].expand_as(per_token)
    term = torch.where(s > 0, per_token, torch.where(s < 0, nll, torch.zeros_like(per_token))) * mask
    return term.sum() / (mask * s.abs()).sum().clamp(min=1)
