"""The methods researchers compare against, each loss against a hand computation from its paper's
formula on a fixed tiny batch (plain torch, written here without the modules' helpers), with the
calibrated signs, and the direction of its gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tracing.errors import AmnesiaError
from unlearn.config import UnlearnConfig
from unlearn.losses import ce_loss, sequence_nll, signed_ce
from unlearn.methods import Batch, get_method

torch.manual_seed(0)
LOGITS = torch.randn(2, 6, 9)
REF = LOGITS + 0.5 * torch.randn(2, 6, 9)
LABELS = torch.tensor([[-100, -100, 1, 2, 3, 4], [-100, 5, 6, 7, -100, -100]])
RETAIN_LOGITS, RETAIN_LABELS = torch.randn(1, 4, 9), torch.tensor([[-100, 2, 3, 4]])


def batch(signs=(1.0, 1.0), epoch=0, logits=LOGITS) -> Batch:
    nll, cnt = sequence_nll(logits, LABELS)
    signs = torch.tensor(signs)
    r_nll, r_cnt = sequence_nll(RETAIN_LOGITS, RETAIN_LABELS)
    return Batch(epoch=epoch, forget_logits=logits, forget_labels=LABELS, forget_nll=nll, forget_tokens=cnt, signs=signs,
                 ce_forget=signed_ce(nll, cnt, signs), retain_logits=RETAIN_LOGITS, retain_labels=RETAIN_LABELS,
                 ce_retain=ce_loss(r_nll, r_cnt), reference_logits=lambda which: REF)


def run(name, b=None, **args):
    method = get_method(name)(UnlearnConfig(method=name, method_args=args))
    loss, logs = method.loss(b if b is not None else batch())
    return loss, logs, method


def tokens(labels=LABELS):
    """(row, position predicting, label) of every labelled token: position t-1's logits predict label t."""
    return [(i, t - 1, int(labels[i, t])) for i in range(labels.shape[0]) for t in range(1, labels.shape[1]) if labels[i, t] != -100]


def logp(logits, i, t, y):
    return F.log_softmax(logits[i, t], -1)[y].item()


CE_R = -sum(logp(RETAIN_LOGITS, 0, t, y) for _, t, y in tokens(RETAIN_LABELS)) / 3


def token_mean(per_token, signs=(1, 1)):
    """Mean over the tokens of rows with sign +1 (their term) and -1 (their NLL): the calibrated token mean."""
    total, n = 0.0, 0
    for i, t, y in tokens():
        if signs[i] > 0:
            total += per_token(i, t, y)
        elif signs[i] < 0:
            total += -logp(LOGITS, i, t, y)
        n += signs[i] != 0
    return total / n


def row_nll_mean(i):
    rows = [-logp(LOGITS, r, t, y) for r, t, y in tokens() if r == i]
    return sum(rows) / len(rows)


def test_simnpo_hand_computed_and_calibrated():
    beta, delta, gamma, alpha = 4.5, 0.0, 0.125, 1.0

    def term(i):
        return -(2 / beta) * math.log(1 / (1 + math.exp(-beta * (row_nll_mean(i) - delta))))

    loss, logs, _ = run("simnpo")
    expected = (term(0) + term(1)) / 2
    assert logs["simnpo"] == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(gamma * expected + alpha * CE_R, rel=1e-5)
    loss, logs, _ = run("simnpo", batch((1.0, -1.0)), delta=0.5, gamma=1.0, alpha=0.0)  # row 1 is past the level: pulled back by its NLL
    assert logs["simnpo"] == pytest.approx((-(2 / beta) * math.log(1 / (1 + math.exp(-beta * (row_nll_mean(0) - 0.5)))) + row_nll_mean(1)) / 2, rel=1e-5)
    _, logs, _ = run("simnpo", batch((0.0, 1.0)))  # row 0 has arrived: left alone
    assert logs["simnpo"] == pytest.approx(term(1), rel=1e-5)


@pytest.mark.parametrize("name, weight, gamma, alpha", [
    ("wga", lambda p: p ** 1.0, 1.0, 1.0),
    ("satimp", lambda p: p ** 5.0 * (1 - p) ** 1.0, 0.1, 1.0),
])
def test_weighted_ascent_hand_computed(name, weight, gamma, alpha):
    def per_token(i, t, y):
        lp = logp(LOGITS, i, t, y)
        return -weight(math.exp(lp)) * -lp

    loss, logs, _ = run(name)
    assert logs[name] == pytest.approx(token_mean(per_token), rel=1e-5)
    assert loss.item() == pytest.approx(gamma * token_mean(per_token) + alpha * CE_R, rel=1e-5)
    _, logs, _ = run(name, batch((-1.0, 1.0)))
    assert logs[name] == pytest.approx(token_mean(per_token, (-1, 1)), rel=1e-5)


def test_ceu_hand_computed_without_the_first_answer_token():
    def per_token(i, t, y):
        z = LOGITS[i, t].clone()
        z[y] = float("-inf")
        q = F.softmax(z, -1)
        return -(q * F.log_softmax(LOGITS[i, t], -1)).sum().item()

    kept = [(i, t, y) for k, (i, t, y) in enumerate(tokens()) if (i, t) not in ((0, 1), (1, 0))]  # the first answer token of each row is left out
    _, logs, _ = run("ceu")
    assert logs["ceu"] == pytest.approx(sum(per_token(*k) for k in kept) / len(kept), rel=1e-5)
    _, logs, _ = run("ceu", ignore_first_n_answer_tokens=0)
    assert logs["ceu"] == pytest.approx(token_mean(per_token), rel=1e-5)


def test_undial_hand_computed():
    beta = 10.0

    def per_token(i, t, y):
        z = REF[i, t].clone()
        z[y] -= beta
        return -(F.softmax(z, -1) * F.log_softmax(LOGITS[i, t], -1)).sum().item()

    loss, logs, method = run("undial")
    assert method.reference == "forget" and not method.needs_retain
    assert loss.item() == pytest.approx(token_mean(per_token), rel=1e-5) == logs["undial"]
    _, logs, _ = run("undial", batch((1.0, 0.0)), beta=2.0)
    assert logs["undial"] == pytest.approx(sum(-(F.softmax(REF[i, t] - 2.0 * F.one_hot(torch.tensor(y), 9), -1) * F.log_softmax(LOGITS[i, t], -1)).sum().item()
                                               for i, t, y in tokens() if i == 0) / 4, rel=1e-5)


def test_pdu_flattening_term_dual_ascent_and_state():
    def per_token(i, t, y):
        z = LOGITS[i, t]
        return ((z.max() - z.mean()) ** 2).item()

    flat = token_mean(per_token)
    loss, logs, method = run("pdu", retain_loss_eps=0.5, dual_warmup_epochs=1, dual_step_size=0.1)
    assert logs["pdu"] == pytest.approx(flat, rel=1e-5) and logs["lambda"] == 1.0
    assert loss.item() == pytest.approx(flat + 1.0 * (CE_R - 0.5), rel=1e-5)
    assert method.multiplier == 1.0  # epoch 0 < warm-up: λ stays
    method.loss(batch(epoch=1))
    assert method.multiplier == pytest.approx(1.0 + 0.1 * (CE_R - 0.5), rel=1e-5)  # dual ascent on the constraint's slack
    again = get_method("pdu")(UnlearnConfig(method="pdu", method_args={"retain_loss_eps": 0.5}))
    again.load_state_dict(method.state_dict())
    assert again.multiplier == method.multiplier and again.record()["pdu"]["retain_loss_eps"] == 0.5
    _, _, auto = run("pdu")  # ε unset: the first micro-batch's retain CE, so the slack starts at 0
    assert auto.eps == pytest.approx(CE_R, rel=1e-5)
    _, _, far = run("pdu", batch(epoch=9), retain_loss_eps=100.0)  # the constraint holds with room: λ falls to 0, not below
    assert far.multiplier == 0.0


@pytest.mark.parametrize("name", ["simnpo", "wga", "satimp", "ceu", "undial"])
def test_a_step_lowers_the_true_tokens_logit(name):
    """Each forget term, minimised, moves probability away from the answer (at the start: reference = model)."""
    logits = LOGITS.clone().requires_grad_(True)
    b = batch(logits=logits)
    b.reference_logits = lambda which: LOGITS
    b.ce_retain = torch.tensor(0.0)
    loss, _, _ = run(name, b)
    loss.backward()
    skipped = {(0, 1), (1, 0)} if name == "ceu" else set()  # CE-U leaves out each row's first answer token
    grads = [logits.grad[i, t, y].item() for i, t, y in tokens() if (i, t) not in skipped]
    assert all(g > 0 for g in grads), grads  # a gradient step lowers every answer token's logit


def test_settings_are_checked_and_typos_named():
    with pytest.raises(AmnesiaError, match=r"method_args beta -1.0: expected a positive number"):
        UnlearnConfig(method="simnpo", method_args={"beta": "-1"}).check()
    with pytest.raises(AmnesiaError, match=r"method_args 'betta': method wga has no such setting \(did you mean beta\?\)"):
        UnlearnConfig(method="wga", method_args={"betta": 1}).check()
    assert get_method("pdu").settings_from(UnlearnConfig(method="pdu", method_args={"retain_loss_eps": "none"})).retain_loss_eps is None
    assert get_method("pdu").settings_from(UnlearnConfig(method="pdu", method_args={"retain_loss_eps": "0.25"})).retain_loss_eps == 0.25


def test_rmu_hand_computed_at_the_last_trained_layer():
    from unlearn.methods.rmu import control_vector, paper_layers

    torch.manual_seed(1)
    f_hidden = tuple(torch.randn(2, 6, 4) for _ in range(4))  # embeddings + 3 layers
    r_hidden = tuple(torch.randn(1, 4, 4) for _ in range(4))
    ref_hidden = tuple(h + 0.1 for h in r_hidden)
    b = batch()
    b.forget_hidden, b.retain_hidden, b.layers = f_hidden, r_hidden, [0, 1]
    b.reference_hidden = lambda which: ref_hidden
    u = torch.rand(4, generator=torch.Generator().manual_seed(42))  # the run's seed (UnlearnConfig.seed)
    u = u / u.norm() * 2.0
    assert torch.allclose(control_vector(4, 2.0, 42), u)

    def rows(h, target, labels):
        out = []
        for i in range(h.shape[0]):
            pos = [t for t in range(labels.shape[1]) if labels[i, t] != -100]
            out.append(sum(((h[i, t] - target[i, t]) ** 2).mean().item() for t in pos) / len(pos))
        return out

    forget = sum(rows(f_hidden[2], u.expand(2, 6, 4), LABELS)) / 2  # layer 1 (the last trained one) is hidden_states[2]
    retain = sum(rows(r_hidden[2], ref_hidden[2], RETAIN_LABELS)) / 1
    loss, logs, method = run("rmu", b)
    assert method.hidden_states and method.reference == "retain"
    assert logs["rmu_forget"] == pytest.approx(forget, rel=1e-5) and logs["rmu_retain"] == pytest.approx(retain, rel=1e-5)
    assert loss.item() == pytest.approx(forget + retain, rel=1e-5)
    _, logs, _ = run("rmu", b, steer_layer=2, steering_coeff=5.0, alpha=3.0)
    assert logs["rmu_forget"] == pytest.approx(sum(rows(f_hidden[3], (u / 2.0 * 5.0).expand(2, 6, 4), LABELS)) / 2, rel=1e-5)
    with pytest.raises(AmnesiaError, match=r"method rmu: steer_layer 3 is out of range for a model with 3 layers \(0..2\)"):
        run("rmu", b, steer_layer=3)
    assert paper_layers(32) == ([5, 6, 7], 7) and paper_layers(30) == ([5, 6, 7], 7) and paper_layers(6) == ([0, 1], 1)


def test_idkdpo_hand_computed_prefers_the_refusal():
    from unlearn.methods.idkdpo import REFUSALS

    alt_logits, alt_ref = torch.randn(2, 5, 9), torch.randn(2, 5, 9)
    alt_labels = torch.tensor([[-100, -100, 8, 0, 1], [-100, 2, 3, -100, -100]])
    b = batch()
    b.alternate_logits, b.alternate_labels = alt_logits, alt_labels
    b.reference_logits = lambda which: alt_ref if which == "alternate" else REF

    def nll(logits, labels, i):
        return -sum(logp(logits, r, t, y) for r, t, y in tokens(labels) if r == i)

    beta = 0.1
    per_row = [-(2 / beta) * math.log(1 / (1 + math.exp(-beta * ((nll(alt_ref, alt_labels, i) - nll(alt_logits, alt_labels, i))
                                                                  - (nll(REF, LABELS, i) - nll(LOGITS, LABELS, i))))))
               for i in range(2)]
    loss, logs, method = run("idkdpo", b)
    assert method.alternates and method.reference == "forget"
    assert logs["idkdpo"] == pytest.approx(sum(per_row) / 2, rel=1e-5)
    assert loss.item() == pytest.approx(sum(per_row) / 2 + CE_R, rel=1e-5)
    b.signs = torch.tensor([0.0, 1.0])
    _, logs, _ = run("idkdpo", b)
    assert logs["idkdpo"] == pytest.approx(per_row[1], rel=1e-5)  # row 0 arrived: left alone

    rows = [{"id": "a", "input": "Q1?", "output": " 1985"}, {"id": "b", "input": "Q2?", "output": "Paris"}]
    answers = method.alternate_answers(rows, 0)
    refusals = [line.strip() for line in REFUSALS.read_text().splitlines() if line.strip()]
    assert answers[0].startswith(" ") and answers[0][1:] in refusals and answers[1] in refusals  # the row's own leading space
    assert method.alternate_answers(rows, 0) == answers  # seeded


def test_idkdpo_refusals_file(tmp_path):
    path = tmp_path / "idk.txt"
    path.write_text("Beats me.\n\n")
    method = get_method("idkdpo")(UnlearnConfig(method="idkdpo", method_args={"refusals": str(path)}))
    assert method.alternate_answers([{"id": "a", "input": "Q", "output": "x"}], 3) == ["Beats me."]
    with pytest.raises(AmnesiaError, match=r"no-such\.txt: refusal answers file does not exist"):
        UnlearnConfig(method="idkdpo", method_args={"refusals": str(tmp_path / "no-such.txt")}).check()
