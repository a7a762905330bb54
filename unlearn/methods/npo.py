"""Negative preference optimization (Zhang et al. 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning"; github.com/licong-lin/negative-preference-optimization)
on the forget rows, plus the retain cross-entropy: ``(2/β)·mean log(1 + (π_θ(y|x)/π_ref(y|x))^β) + CE_r``."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method, no_method_args, register


def npo_loss(nll_forget, ref_nll_forget, beta: float, rows=None, counts=None):
    """Negative preference optimization on forget rows (sequence level).

    ``nll_forget`` / ``ref_nll_forget`` are per-row summed NLLs of the output under the model
    and the frozen reference; ``log π_θ/π_ref = ref_nll − nll``, and
    ``L = −(2/β)·mean logσ(−β·log π_θ/π_ref) = (2/β)·mean log(1 + (π_θ/π_ref)^β)``.
    At the start (θ = ref) the loss is ``(2/β)·log 2`` and its gradient is half that of
    gradient ascent; it flattens as the forget rows become unlikely, which keeps NPO from
    collapsing the model.

    ``rows`` may be signs from :func:`unlearn.losses.forget_signs`: rows with ``+1`` take the NPO
    term, rows with ``-1`` (pulled back) their token-mean NLL (``counts`` tokens), rows with ``0``
    nothing (:func:`unlearn.losses.calibrated_rows`); the mean is over the rows that take part.
    """
    import torch
    import torch.nn.functional as F

    from ..losses import calibrated_rows

    log_ratio = ref_nll_forget - nll_forget
    per_row = -F.logsigmoid(-beta * log_ratio) * (2.0 / beta)
    if rows is None:
        return per_row.mean()
    return calibrated_rows(per_row, rows, nll_forget, torch.ones_like(nll_forget) if counts is None else counts)


@dataclass(frozen=True)
class NPOSettings:
    """NPO's inverse temperature (``unlearn.npo_beta``, ``--npo-beta``)."""

    beta: float = 0.1


@register
class NPO(Method):
    name = "npo"
    summary = "negative preference optimization on forget rows + CE_r (β: --npo-beta)"
    reference = "forget"
    Settings = NPOSettings
    logs = {"npo": ""}

    @classmethod
    def settings_from(cls, config):
        no_method_args(cls, config, "npo_beta")
        return NPOSettings(beta=config.npo_beta)  # a field of UnlearnConfig (checked there) since before methods were plug-ins

    def loss(self, batch):
        from ..losses import sequence_nll

        ref_nll, _ = sequence_nll(batch.reference_logits("forget"), batch.forget_labels)
        npo = npo_loss(batch.forget_nll, ref_nll.detach(), self.settings.beta, batch.signs, batch.forget_tokens)
        return npo + batch.ce_retain, {"npo": npo.item()}
