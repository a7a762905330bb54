"""Calibrated forgetting: the reference level, the per-row signs, and the trainer stopping/pulling rows there."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from tracing.errors import AmnesiaError
from unlearn.api import label_prompt_flags, train_unlearning
from unlearn.calibration import levels_for, quantile, reference_documents, reference_level, resolve_forget_target
from unlearn.data import load_semeval
from unlearn.dataset import encode_split
from unlearn.eval.nll import document_nll
from unlearn.losses import forget_signs, sequence_nll, signed_ce
from unlearn.methods.npo import npo_loss
from unlearn.models import ModelOptions, load_model
from unlearn.config import UnlearnConfig

CPU = ModelOptions(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def data(fixture_world):
    return load_semeval(fixture_world)


def test_quantile_is_the_median_and_interpolates():
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.25) == pytest.approx(1.75)
    assert quantile([5.0, float("nan"), 1.0], 0.5) == 3.0  # non-finite values are ignored
    with pytest.raises(AmnesiaError, match="no finite reference NLL"):
        quantile([float("nan")], 0.5)


def test_forget_signs_push_stop_and_pull():
    nll = torch.tensor([1.0, 3.0, 5.0, 0.0])
    rows = torch.tensor([True, True, True, False])
    assert forget_signs(nll, rows, None).tolist() == [1.0, 1.0, 1.0, 0.0]  # uncalibrated: push every row that has tokens
    assert forget_signs(nll, rows, 3.0, "stop").tolist() == [1.0, 0.0, 0.0, 0.0]  # at or past the level: stop
    assert forget_signs(nll, rows, 3.0, "pull").tolist() == [1.0, -1.0, -1.0, 0.0]  # past it: pulled back


def test_signed_ce_is_the_token_mean_of_pushed_minus_pulled_rows():
    nll_sum = torch.tensor([2.0, 9.0, 4.0])
    counts = torch.tensor([2, 3, 4])
    signs = torch.tensor([1.0, -1.0, 0.0])
    assert signed_ce(nll_sum, counts, signs).item() == pytest.approx((2.0 - 9.0) / 5)
    assert signed_ce(nll_sum, counts, torch.ones(3)).item() == pytest.approx(15.0 / 9)  # all pushed = plain token-mean CE


def test_npo_with_signs_takes_pulled_rows_as_plain_nll():
    nll = torch.tensor([4.0, 6.0, 1.0])
    ref = torch.tensor([4.0, 2.0, 1.0])
    counts = torch.tensor([2, 3, 1])
    signs = torch.tensor([1.0, -1.0, 0.0])
    npo_row0 = -torch.nn.functional.logsigmoid(torch.tensor(-0.1 * 0.0)) * 20.0  # log-ratio 0: (2/β)·log 2
    assert npo_loss(nll, ref, 0.1, signs, counts).item() == pytest.approx(((npo_row0 + 6.0 / 3) / 2).item())


def test_reference_level_is_the_median_document_nll(fixture_target, data):
    model, tok = load_model(fixture_target, CPU)
    docs = list(data.mia_validation["nonmember"]["document"])
    target = reference_level(model, tok, docs, source="validation")
    nll = document_nll(model, tok, docs)
    assert target.level == pytest.approx(statistics.median(nll))
    assert target.documents == len(docs) and target.reference_q10 <= target.level <= target.reference_q90
    assert quantile(target.measure(model), 0.5) == pytest.approx(target.level)  # re-measured on the current model
    assert target.distribution == sorted(nll) and target.measure(model) == pytest.approx(sorted(nll))  # the whole distribution (spread targets)
    assert levels_for([0.0, 0.5, 1.0], target.distribution) == pytest.approx([min(nll), target.level, max(nll)])
    # auto takes the data's validation non-members; none, a number and no references need no model work
    auto = resolve_forget_target(model, tok, "auto", data=data)
    assert auto.level == pytest.approx(target.level) and auto.source.endswith("mia_data/validation/nonmember.jsonl")
    assert resolve_forget_target(model, tok, "none").level is None
    assert resolve_forget_target(model, tok, 2.5).level == 2.5
    assert resolve_forget_target(model, tok, "auto").level is None  # nothing to calibrate on: uncalibrated, source says why


def test_reference_documents_never_the_test_mia_files(data, tmp_path):
    test_doc = data.mia["nonmember"]["document"][0]
    bad = tmp_path / "ref.jsonl"
    bad.write_text(json.dumps({"document": test_doc}) + "\n" + json.dumps({"document": "A never-seen text."}) + "\n")
    with pytest.raises(AmnesiaError, match="1 of its documents are test MIA documents"):
        reference_documents(data, str(bad))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"document": "A never-seen text."}) + "\n")
    assert reference_documents(data, str(good)) == (["A never-seen text."], str(good))
    with pytest.raises(AmnesiaError, match="forget reference does not exist"):
        reference_documents(data, str(tmp_path / "missing.jsonl"))


def test_forget_tokens_documents_labels_sentence_completion_prompts_only(fixture_target, data):
    _, tok = load_model(fixture_target, CPU)
    rows = data.get("forget", "train").select(range(6))  # one person: sc1 + qa0..qa4
    flags = label_prompt_flags(rows, "documents")
    assert flags == [rid.endswith("sc1") for rid in rows["id"]] and sum(flags) == 1
    assert label_prompt_flags(rows, "all") == [True] * 6 and label_prompt_flags(rows, "output") == [False] * 6
    enc = encode_split(tok, rows, label_prompt=flags, label_eos=False)
    sc = flags.index(True)
    assert enc.labels[sc][:-1] == enc.input_ids[sc][:-1]  # the whole document is labelled ...
    assert enc.labels[sc][-1] == -100 and enc.input_ids[sc][-1] == tok.eos_token_id  # ... but not the EOS
    qa = flags.index(False)
    assert enc.labels[qa][0] == -100  # a question's prompt is not


def test_trainer_pushes_rows_below_the_level_and_pulls_rows_above(fixture_target, data, monkeypatch):
    """With ga and pull, the first step's loss is −(Σ NLL of rows below the level − Σ NLL of rows above) / their tokens."""
    model, tok = load_model(fixture_target, CPU, for_training=True)
    forget = data.get("forget", "train").select(range(8))
    enc = encode_split(tok, forget, label_prompt=True, label_eos=False)
    with torch.no_grad():
        per_row = [sequence_nll(model(torch.tensor([i])).logits, torch.tensor([l])) for i, l in zip(enc.input_ids, enc.labels)]
    means = sorted(float(s / n) for s, n in per_row)
    level = (means[3] + means[4]) / 2  # half the rows below, half above
    seen = []
    import unlearn.trainer as trainer_module

    real = trainer_module.signed_ce

    def spy(nll_sum, counts, signs):
        seen.append((nll_sum.detach().clone(), counts.clone(), signs.clone()))
        return real(nll_sum, counts, signs)

    monkeypatch.setattr(trainer_module, "signed_ce", spy)
    config = UnlearnConfig(method="ga", layers="0-1", kind="mlp", batch_size=8, grad_accum=1, max_steps=1, lr=1e-4, logging_steps=50, seed=0,
                           forget_target=level, forget_mode="pull", forget_tokens="all", forget_update_steps=0)
    run = train_unlearning(model, tok, forget, None, config, progress=False, device="cpu")
    nll_sum, counts, signs = seen[0]
    row_mean = nll_sum / counts
    assert ((row_mean < level) == (signs > 0)).all() and ((row_mean >= level) == (signs < 0)).all()
    assert int((signs > 0).sum()) == 4 and int((signs < 0).sum()) == 4
    expected = -(nll_sum * signs).sum() / counts.sum()
    assert run.report["per_epoch"][0]["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert run.report["per_epoch"][0]["forget_reached"] == pytest.approx(0.5)
    assert run.report["forget_target"]["level"] == level and run.report["forget_target"]["source"] == "manual"
