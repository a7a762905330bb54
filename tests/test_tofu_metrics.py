"""The TOFU metrics against values worked out by hand (TOFU's aggregate_eval_stat.py, MUSE/OpenUnlearning privleak)."""

from __future__ import annotations

import math

import pytest

from tracing.errors import AmnesiaError
from pipelines.tofu import metrics as tm
from unlearn.eval import metrics as membership


def test_normalized_probability():
    assert tm.normalized_probability(math.log(4)) == pytest.approx(0.25)  # exp(−ln 4)
    assert tm.normalized_probability(0.0) == 1.0


def test_option_probability():
    # p_true = exp(−ln 2) = 1/2; two wrong answers at exp(−ln 4) = 1/4 each: 0.5 / (0.5 + 0.25 + 0.25)
    assert tm.option_probability(math.log(2), [math.log(4), math.log(4)]) == pytest.approx(0.5)
    # p_true = 1, one wrong answer at 1/3: 1 / (1 + 1/3) = 3/4
    assert tm.option_probability(0.0, [math.log(3)]) == pytest.approx(0.75)


def test_truth_ratio_stat_and_paper_ratio():
    # paraphrased mean NLL 1, perturbed 2 and 4 (mean 3): TOFU's curr_stat_1 = exp(3 − 1) = e², R_truth = e⁻²
    assert tm.truth_ratio_stat(1.0, [2.0, 4.0]) == pytest.approx(math.e ** 2)
    assert tm.truth_ratio(1.0, [2.0, 4.0]) == pytest.approx(math.e ** -2)
    # P_para / geomean(P_pert) with P = exp(−nll): exp(−1) / sqrt(exp(−2)·exp(−4))
    assert tm.truth_ratio_stat(1.0, [2.0, 4.0]) == pytest.approx(math.exp(-1) / math.sqrt(math.exp(-2) * math.exp(-4)))


def test_truth_ratio_score_forget_vs_others():
    stats = [2.0, 0.5, 5.0]
    # forget: mean(min(s, 1/s)) = (0.5 + 0.5 + 0.2) / 3
    assert tm.truth_ratio_score(stats, forget=True) == pytest.approx(1.2 / 3)
    # others: mean(max(0, 1 − 1/s)) = (0.5 + 0 + 0.8) / 3 — a row preferring the wrong answers counts 0
    assert tm.truth_ratio_score(stats, forget=False) == pytest.approx(1.3 / 3)
    assert tm.truth_ratio_score([1.0], forget=True) == 1.0 and tm.truth_ratio_score([1.0], forget=False) == 0.0
    assert tm.truth_ratio_score([10.0], forget=True) == pytest.approx(0.1)
    assert tm.truth_ratio_score([10.0], forget=False) == pytest.approx(0.9)
    assert tm.truth_ratio_score([0.1], forget=False) == 0.0


def test_extremes_of_a_far_off_model():
    # mean NLLs far apart (a model pushed away by unlearning): limits, not overflow or division by zero
    assert tm.option_probability(1000.0, [0.0, 0.0]) == 0.0
    assert tm.option_probability(0.0, [1000.0]) == 1.0
    assert tm.truth_ratio_stat(0.0, [1000.0]) == math.inf and tm.truth_ratio(0.0, [1000.0]) == 0.0
    assert tm.truth_ratio_stat(1000.0, [0.0]) == 0.0
    assert tm.truth_ratio_score([math.inf, 0.0], forget=True) == 0.0
    assert tm.truth_ratio_score([math.inf, 0.0], forget=False) == pytest.approx(0.5)  # 1 and 0
    assert tm.forget_quality([math.inf, 1.0], [math.inf, 1.0]).p_value == 1.0
    with pytest.raises(AmnesiaError, match="value 0 is nan"):
        tm.truth_ratio_score([float("nan")], forget=True)


def test_rouge_l_recall_is_stemmed_recall():
    # reference 6 tokens, the generation's longest common subsequence "the cat on mat" is 4 of them
    assert tm.rouge_l_recall("the cat sat on the mat", "the cat on mat") == pytest.approx(4 / 6)
    assert tm.rouge_l_recall("cats running", "cat run") == 1.0  # Porter stemmer: cats → cat, running → run
    assert tm.rouge_l_recall("a b", "b a") == pytest.approx(0.5) and tm.rouge1_recall("a b", "b a") == 1.0
    assert tm.rouge_l_recall("the cat", "") == 0.0


def test_forget_quality_ks():
    same = tm.forget_quality([0.5, 1.0, 2.0], [0.5, 1.0, 2.0])
    assert same.p_value == 1.0 and same.statistic == 0.0
    # fully separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    apart = tm.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert apart.statistic == 1.0 and apart.p_value == pytest.approx(2 / math.comb(6, 3))
    from scipy.stats import ks_2samp

    x, y = [0.3, 0.9, 1.4, 2.2, 0.7], [1.1, 1.9, 0.8, 2.5, 3.0, 1.6]
    ref = ks_2samp(x, y)
    got = tm.forget_quality(x, y)
    assert (got.p_value, got.statistic) == (ref.pvalue, ref.statistic)
    inverse = tm.forget_quality([1 / v for v in x], [1 / v for v in y])  # the paper's R_truth = 1/s: same test
    assert inverse.p_value == pytest.approx(got.p_value) and inverse.statistic == pytest.approx(got.statistic)


def test_model_utility_is_the_harmonic_mean_of_nine():
    half = tm.SetScores(0.5, 0.5, 0.5)
    assert tm.model_utility(half, half, half) == pytest.approx(0.5)
    one, quarter = tm.SetScores(1.0, 1.0, 1.0), tm.SetScores(0.25, 0.25, 0.25)
    # 9 / (3·1 + 3·2 + 3·4) = 9 / 21
    assert tm.model_utility(one, half, quarter) == pytest.approx(9 / 21)
    assert tm.model_utility(one, tm.SetScores(1.0, 0.0, 1.0), one) == 0.0
    with pytest.raises(AmnesiaError, match="expected nine finite values"):
        tm.model_utility(one, tm.SetScores(float("nan"), 1.0, 1.0), one)


def test_min_k_and_loss_scores():
    nll = [3.0, 1.0, 5.0, 2.0, 4.0]
    # k = 0.4 of 5 tokens: the 2 lowest log-probs = the 2 highest NLLs (5, 4): score 4.5
    assert membership.min_k_score(nll, 0.4) == pytest.approx(4.5)
    assert membership.min_k_score(nll, 0.1) == 5.0  # max(1, int(0.5)) = 1 token
    assert membership.min_k_score(nll, 1.0) == pytest.approx(3.0)  # all tokens: the loss attack
    assert membership.loss_score(nll) == pytest.approx(3.0)
    with pytest.raises(AmnesiaError, match="min-k fraction 0"):
        membership.min_k_score(nll, 0)
    with pytest.raises(AmnesiaError, match="token losses: no values"):
        membership.min_k_score([], 0.4)


def test_membership_auc_orientation():
    # memorised: forget rows (members) have lower non-membership scores than holdout rows: AUC 1
    assert tm.membership_auc([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert tm.membership_auc([3.0, 4.0], [1.0, 2.0]) == 0.0
    # pairs (holdout > forget): 2>1, 4>1, 4>3 of the 4 pairs; 2>3 fails: 3/4
    assert tm.membership_auc([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)
    assert tm.membership_auc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(0.5)
    with pytest.raises(AmnesiaError, match="value 1 is nan"):
        tm.membership_auc([1.0, float("nan")], [2.0])


def test_privleak_sign():
    # MUSE orientation: AUC_MUSE = 1 − our AUC; privleak = (AUC_MUSE − AUC_MUSE_retain) / AUC_MUSE_retain · 100
    assert tm.privleak(1.0, 0.5) == pytest.approx(-100.0)  # memorised vs a retain model at chance: (0 − 0.5) / 0.5
    assert tm.privleak(0.5, 0.5) == 0.0  # like the retain model
    assert tm.privleak(0.25, 0.5) == pytest.approx(50.0)  # over-unlearned: (0.75 − 0.5) / 0.5
    assert tm.privleak(0.6, 0.4) == pytest.approx((0.4 - 0.6) / 0.6 * 100)
    assert tm.privleak(1.0, 1.0) == 0.0  # the 1e-10 guard of OpenUnlearning: no division by zero
    with pytest.raises(AmnesiaError, match="the retain model's AUC is 1.5"):
        tm.privleak(0.5, 1.5)
    # end to end: a model whose forget rows cost less than holdout rows leaks against a retain model at chance
    leaking = tm.membership_auc([membership.min_k_score([0.1, 0.2, 0.3])], [membership.min_k_score([2.0, 3.0, 4.0])])
    assert leaking == 1.0 and tm.privleak(leaking, 0.5) < 0
