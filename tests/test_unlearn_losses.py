"""Loss functions and the sha256 α schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unlearn.config import UnlearnConfig
from unlearn.losses import ce_loss, sequence_nll
from unlearn.methods import Batch, get_method
from unlearn.methods.kl import kl_divergence
from unlearn.methods.npo import npo_loss
from unlearn.methods.sha256 import AlphaParams, AlphaSchedule, sha256_alpha

PAPER, CODE = AlphaParams.paper(), AlphaParams.code()


@pytest.mark.parametrize(
    "gap, paper, code",
    [
        (None, 1.2, 1.2),  # first epoch: no L_ref yet
        (-0.3, 1.2, 1.2),  # CE_r below L_ref
        (0.0, 1.2, 1.2),  # CE_r == L_ref is not "greater"
        (0.1, 1.2, 1.2),  # 0.3·6^0.1 + 0.8 = 1.1589 → clipped up to α_min
        (0.5, 0.3 * math.sqrt(6) + 0.8, 1.5),  # 1.53485 → code rounds to 1.5
        (0.7, 0.3 * 6**0.7 + 0.8, 1.9),  # 1.85155 → 1.9
        (1.0, 2.6, 2.3),  # 0.3·6 + 0.8 = 2.6: inside the paper's clip, above the code's
        (2.0, 2.8, 2.3),  # 0.3·36 + 0.8 = 11.6 → α_max
        (5000.0, 2.8, 2.3),  # 6^5000 overflows a float: still α_max
    ],
)
def test_sha256_alpha_hand_computed(gap, paper, code):
    l_ref = None if gap is None else 1.7
    ce_r = 1.7 + (gap or 0.0)
    assert sha256_alpha(ce_r, l_ref, PAPER) == pytest.approx(paper, abs=1e-12)
    assert sha256_alpha(ce_r, l_ref, CODE) == pytest.approx(code, abs=1e-12)


def test_sha256_alpha_other_constants_and_nan():
    p = AlphaParams(a=1.0, b=2.0, c=0.0, alpha_min=0.5, alpha_max=10.0)
    assert sha256_alpha(3.0, 1.0, p) == pytest.approx(4.0)  # 1·2^2 + 0
    assert sha256_alpha(float("nan"), 1.0, PAPER) == 1.2
    assert sha256_alpha(float("inf"), 1.0, PAPER) == 1.2


def test_config_alpha_variants():
    assert UnlearnConfig().alpha_params() == AlphaParams(0.3, 6.0, 0.8, 1.2, 2.8, None)
    assert UnlearnConfig(alpha_variant="code").alpha_params() == AlphaParams(0.3, 6.0, 0.8, 1.2, 2.3, 1)
    assert UnlearnConfig(alpha_variant="code", alpha_max=2.5).alpha_params().alpha_max == 2.5


def test_alpha_schedule_reference_from_first_epoch_and_state_round_trip():
    s = AlphaSchedule(PAPER)
    assert [s.alpha(0, v) for v in (1.0, 2.0, 3.0, float("nan"))] == [1.2] * 4  # NaN not averaged in
    assert s.l_ref is None
    assert s.alpha(1, 2.5) == pytest.approx(0.3 * 6**0.5 + 0.8)  # L_ref = mean(1, 2, 3) = 2
    assert s.l_ref == 2.0
    assert s.alpha(1, 1.9) == 1.2
    assert s.alpha(2, 3.0) == pytest.approx(2.6)
    clone = AlphaSchedule(PAPER)
    clone.load_state_dict(s.state_dict())
    assert clone.alpha(3, 2.5) == s.alpha(3, 2.5)
    # a schedule restored in the middle of epoch 0 keeps accumulating from where it was
    half = AlphaSchedule(PAPER)
    half.alpha(0, 1.0)
    resumed = AlphaSchedule(PAPER)
    resumed.load_state_dict(half.state_dict())
    resumed.alpha(0, 3.0)
    assert resumed.alpha(1, 2.0) == 1.2 and resumed.l_ref == 2.0


def _logits_labels(seed=0, batch=3, seq=7, vocab=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=g)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[0, :4] = -100  # a prompt
    labels[1, :2] = -100
    labels[2, :] = -100  # no output token at all
    return logits, labels


def test_sequence_nll_matches_shifted_cross_entropy():
    logits, labels = _logits_labels()
    sums, counts = sequence_nll(logits, labels)
    assert counts.tolist() == [3, 5, 0]
    for row in range(3):
        lab = labels[row, 1:]
        keep = lab != -100
        expected = F.cross_entropy(logits[row, :-1][keep], lab[keep], reduction="sum") if keep.any() else torch.tensor(0.0)
        assert sums[row].item() == pytest.approx(expected.item(), rel=1e-6)
    # token mean over the batch = the usual causal-LM loss with ignore_index
    hf = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert ce_loss(sums, counts).item() == pytest.approx(hf.item(), rel=1e-6)
    only_first = ce_loss(sums, counts, torch.tensor([True, False, False]))
    assert only_first.item() == pytest.approx(sums[0].item() / 3, rel=1e-6)
    assert ce_loss(sums, counts, torch.tensor([False, False, False])).item() == 0.0


def test_simple_losses():
    """Each built-in method's loss from the trainer's shared terms (CE_f 2.0, CE_r 0.5)."""
    logits, ref = torch.randn(1, 4, 7), torch.randn(1, 4, 7)
    labels = torch.tensor([[-100, 1, 2, 3]])
    batch = Batch(epoch=0, forget_logits=logits, forget_labels=labels, forget_nll=torch.tensor([6.0]), forget_tokens=torch.tensor([3]),
                  signs=torch.tensor([1.0]), ce_forget=torch.tensor(2.0), retain_logits=logits, retain_labels=labels, ce_retain=torch.tensor(0.5),
                  reference_logits=lambda which: ref)

    def loss(name):
        value, logs = get_method(name)(UnlearnConfig(method=name)).loss(batch)
        return value.item(), logs

    assert loss("ga") == (-2.0, {})
    assert loss("gd") == (-1.5, {})
    assert loss("sha256")[0] == pytest.approx(-2.0 + 1.2 * 0.5) and loss("sha256")[1] == {"alpha": 1.2}  # epoch 0: α_min
    kl = kl_divergence(logits, ref, labels).item()
    assert loss("kl")[0] == pytest.approx(-2.0 + kl) and loss("kl")[1]["kl_retain"] == pytest.approx(kl)
    ref_nll, _ = sequence_nll(ref, labels)
    npo = npo_loss(torch.tensor([6.0]), ref_nll, 0.1, torch.tensor([1.0]), torch.tensor([3])).item()
    assert loss("npo")[0] == pytest.approx(npo + 0.5) and loss("npo")[1]["npo"] == pytest.approx(npo)


def test_kl_divergence():
    logits, labels = _logits_labels(1)
    assert kl_divergence(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-6)
    ref = logits + torch.randn_like(logits)
    mask = labels[:, 1:] != -100
    p_ref = F.softmax(ref[:, :-1], -1)[mask]
    manual = (p_ref * (p_ref.log() - F.log_softmax(logits[:, :-1], -1)[mask])).sum(-1).mean()
    assert kl_divergence(logits, ref, labels).item() == pytest.approx(manual.item(), rel=1e-5)
    assert kl_divergence(logits, ref, labels).item() > 0


def test_npo_loss_value_and_direction():
    beta = 0.1
    nll = torch.tensor([5.0, 8.0], requires_grad=True)
    ref = torch.tensor([5.0, 8.0])
    loss = npo_loss(nll, ref, beta)
    assert loss.item() == pytest.approx(2 / beta * math.log(2))  # θ = ref
    loss.backward()
    # at θ = ref, dL/dNLL_i = −1/n: exactly gradient ascent on the mean summed NLL
    assert nll.grad.tolist() == pytest.approx([-0.5, -0.5])
    # forgetting (higher NLL than the reference) lowers the loss, and it flattens out
    far = npo_loss(torch.tensor([105.0]), torch.tensor([5.0]), beta).item()
    near = npo_loss(torch.tensor([6.0]), torch.tensor([5.0]), beta).item()
    assert far < near < 2 / beta * math.log(2)
    # rows masked out do not count
    masked = npo_loss(torch.tensor([6.0, 105.0]), torch.tensor([5.0, 5.0]), beta, torch.tensor([True, False]))
    assert masked.item() == pytest.approx(near)
