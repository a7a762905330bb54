"""The TOFU benchmark's metrics, one small pure function each, over numbers (no model).

Definitions follow TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning"), as its
code computes them: ``evaluate_util.py`` (per-row losses, generations and ROUGE) and
``aggregate_eval_stat.py`` (``get_model_utility``, ``get_forget_quality``) of
github.com/locuslab/tofu. The privacy-leak score follows MUSE (Shi et al. 2024, "MUSE:
Machine Unlearning Six-Way Evaluation for Language Models") as OpenUnlearning computes it for
TOFU (github.com/locuslab/open-unlearning, ``mia_min_k`` + ``privleak``).

Every per-row input is a *mean token NLL*: the loss of an answer conditioned on its question,
averaged over the answer's tokens (TOFU's ``avg_gt_loss``, ``avg_paraphrased_loss`` and, per
perturbed answer, ``average_perturb_loss``). ``exp(−mean NLL)`` is the length-normalised
probability ``P(a|q)^(1/|a|)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tracing.errors import AmnesiaError
from unlearn.eval.metrics import finite_values, harmonic_mean, rouge_recall


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _exp(x: float) -> float:
    """``exp(x)``, ``inf`` past the float range (a model far off after unlearning) instead of an OverflowError."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _ratios(stats: Sequence[float], what: str) -> list[float]:
    """Truth-ratio statistics: ≥ 0, 0 and ``inf`` allowed (the limits of ``exp``), NaN not."""
    out = [float(v) for v in stats]
    if not out:
        raise AmnesiaError(f"{what}: no values (expected at least one)")
    for i, v in enumerate(out):
        if math.isnan(v) or v < 0:
            raise AmnesiaError(f"{what}: value {i} is {v} (expected ratios ≥ 0, exp of a loss difference)")
    return out


# --------------------------------------------------------------------------- probability


def normalized_probability(mean_nll: float) -> float:
    """``exp(−mean token NLL)`` = ``P(a|q)^(1/|a|)``: TOFU's per-row "Prob." on the forget and retain sets.

    TOFU ``get_model_utility``: ``gt_probs = np.exp(-1 * avg_gt_loss)``; the set's score is their mean.
    """
    return math.exp(-float(mean_nll))


def option_probability(true_nll: float, perturbed_nlls: Sequence[float]) -> float:
    """``p_true / (p_true + Σ p_perturbed)`` with each ``p = exp(−mean NLL)``: "Prob." on real authors and world facts.

    TOFU ``get_model_utility`` (files other than ``eval_log*``): ``avg_true_prob / avg_all_prob``,
    the true answer's normalised probability against it plus the perturbed (wrong) answers'.
    Computed as ``1 / (1 + Σ exp(true_nll − perturbed_nll))`` (the same value, with no underflow
    when every probability is tiny).
    """
    true = float(true_nll)
    return 1.0 / (1.0 + math.fsum(_exp(true - x) for x in finite_values(perturbed_nlls, "perturbed answers")))


# --------------------------------------------------------------------------- truth ratio


def truth_ratio_stat(paraphrased_nll: float, perturbed_nlls: Sequence[float]) -> float:
    """TOFU's per-row statistic ``exp(mean(perturbed mean-NLLs) − paraphrased mean-NLL)``.

    That is ``P_para / geomean(P_pert)`` (each ``P`` length-normalised): TOFU's ``curr_stat_1``
    in ``get_model_utility`` and the ``*_truth_ratio`` values ``get_forget_quality`` compares.
    On real authors and world facts the "paraphrased" answer is the answer itself (TOFU's
    ``base_answer_key: answer``). It is the inverse of the paper's :func:`truth_ratio`.
    """
    perturbed = finite_values(perturbed_nlls, "perturbed answers")
    return _exp(_mean(perturbed) - float(paraphrased_nll))


def truth_ratio(paraphrased_nll: float, perturbed_nlls: Sequence[float]) -> float:
    """The paper's ``R_truth = geomean(P_pert) / P_para = exp(paraphrased NLL − mean(perturbed NLLs))``.

    Below 1 when the model prefers the (paraphrased) true answer; ``1 / truth_ratio_stat``.
    """
    perturbed = finite_values(perturbed_nlls, "perturbed answers")
    return _exp(float(paraphrased_nll) - _mean(perturbed))


def truth_ratio_score(stats: Sequence[float], *, forget: bool) -> float:
    """A set's "Truth Ratio" score from TOFU's per-row statistics (:func:`truth_ratio_stat`).

    TOFU ``get_model_utility``, with ``s = curr_stat_1 = P_para / geomean(P_pert)``:

    * forget set: ``mean(min(s, 1/s))`` — 1 when true and wrong answers are equally likely;
    * retain, real authors, world facts: ``mean(max(0, 1 − 1/s))`` = ``mean(max(0, 1 − R_truth))``
      — near 1 when the model strongly prefers the true answer, 0 when it does not prefer it.

    ``s = 0`` and ``s = inf`` (exp past the float range) count as their limits: 0 on the forget
    set; 0 and 1 elsewhere.
    """
    values = _ratios(stats, "truth-ratio statistics")
    if forget:
        return _mean([0.0 if s in (0.0, math.inf) else min(s, 1.0 / s) for s in values])
    return _mean([0.0 if s == 0.0 else max(0.0, 1.0 - 1.0 / s) for s in values])


# --------------------------------------------------------------------------- ROUGE


def rouge_l_recall(answer: str, generated: str) -> float:
    """ROUGE-L recall of ``generated`` against the ground-truth ``answer``, stemmed.

    TOFU ``eval_rouge_recall``: ``RougeScorer(['rouge1', 'rougeL'], use_stemmer=True)``,
    ``scorer.score(gt, gen)['rougeL'].recall`` — exactly the SemEval metrics' scorer, which is
    reused (:func:`unlearn.eval.metrics.rouge_recall`).
    """
    return rouge_recall(answer, generated)["rougeL"]


def rouge1_recall(answer: str, generated: str) -> float:
    """ROUGE-1 recall (TOFU logs it beside ROUGE-L as ``rouge1_recall``; not part of model utility)."""
    return rouge_recall(answer, generated)["rouge1"]


# --------------------------------------------------------------------------- forget quality


@dataclass(frozen=True)
class ForgetQuality:
    """The two-sample Kolmogorov–Smirnov test of the forget-set truth ratios: p-value and statistic."""

    p_value: float
    statistic: float


def forget_quality(unlearned_ratios: Sequence[float], retain_ratios: Sequence[float]) -> ForgetQuality:
    """``scipy.stats.ks_2samp`` of the unlearned and the retain model's per-row forget-set truth ratios.

    TOFU ``get_forget_quality``: ``ks_2samp(unlearn_truth_ratio, retain_truth_ratio)`` with each
    ``truth_ratio = exp(average_perturb_loss.mean(-1) − avg_paraphrased_loss)`` (the
    :func:`truth_ratio_stat` values); OpenUnlearning passes ``1 / R_truth`` of its per-row
    ``R_truth`` (:func:`truth_ratio`, what the evaluation stores). "Forget Quality" is the p-value
    (high = indistinguishable from the model never trained on the forget set). The test only
    depends on the ranks, so either orientation — the same for both models — gives the same p-value.
    """
    from scipy.stats import ks_2samp

    result = ks_2samp(_ratios(unlearned_ratios, "unlearned truth ratios"), _ratios(retain_ratios, "retain-model truth ratios"))
    return ForgetQuality(p_value=float(result.pvalue), statistic=float(result.statistic))


# --------------------------------------------------------------------------- model utility


@dataclass(frozen=True)
class SetScores:
    """One evaluation set's three utility values: "Prob.", "ROUGE" (ROUGE-L recall) and "Truth Ratio"."""

    probability: float
    rouge_l_recall: float
    truth_ratio_score: float

    def values(self) -> tuple[float, float, float]:
        return (self.probability, self.rouge_l_recall, self.truth_ratio_score)


def model_utility(retain: SetScores, real_authors: SetScores, world_facts: SetScores) -> float:
    """The harmonic mean of the nine values: Prob., ROUGE and Truth Ratio on retain, real authors, world facts.

    TOFU ``get_model_utility``: ``hmean`` of every entry except the forget set's. 0 when any of
    the nine is 0 (:func:`unlearn.eval.metrics.harmonic_mean`, ``statistics.harmonic_mean``).
    """
    values = [*retain.values(), *real_authors.values(), *world_facts.values()]
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise AmnesiaError(f"model utility: value {v} (expected nine finite values ≥ 0)")
    return float(harmonic_mean(values))


# --------------------------------------------------------------------------- privacy leak


def membership_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC of non-membership scores with holdout rows labelled 1 and forget rows 0.

    OpenUnlearning ``mia_auc``: ``roc_auc_score([0]*len(forget) + [1]*len(holdout), scores)``
    (``sklearn.metrics.roc_auc_score``). Oriented so that a model that memorised the forget rows
    (low scores there) gets an AUC near 1, a model that never saw them about 0.5.
    """
    from sklearn.metrics import roc_auc_score

    forget = finite_values(forget_scores, "forget membership scores")
    holdout = finite_values(holdout_scores, "holdout membership scores")
    labels = [0] * len(forget) + [1] * len(holdout)
    return float(roc_auc_score(labels, forget + holdout))


def privleak(auc_model: float, auc_retain: float) -> float:
    """MUSE's PrivLeak of a model against the retain model, from :func:`membership_auc` values.

    MUSE (Shi et al. 2024) defines ``PrivLeak = (AUC_unlearn − AUC_retrain) / AUC_retrain`` with
    its AUC oriented the other way round (memorised → 0), i.e. ``1 −`` the AUC here; OpenUnlearning
    ``privleak`` converts likewise (``score = 1 − score; ref = 1 − ref``) and divides by
    ``ref + 1e-10``. So, with ``a`` = the model's AUC and ``r`` = the retain model's (both in
    :func:`membership_auc`'s orientation)::

        privleak = ((1 − a) − (1 − r)) / ((1 − r) + 1e-10) × 100

    0 = the retain model's level; negative = the forget rows still look like members (−100 for a
    model that memorised them, ``a = 1``, against a retain model at chance, ``r = 0.5``);
    positive = over-unlearned (forget rows look *less* familiar than never-seen ones).
    """
    for name, value in (("model", auc_model), ("retain model", auc_retain)):
        if not 0.0 <= value <= 1.0:
            raise AmnesiaError(f"privleak: the {name}'s AUC is {value} (expected a value in [0, 1])")
    score, ref = 1.0 - auc_model, 1.0 - auc_retain
    return (score - ref) / (ref + 1e-10) * 100.0
