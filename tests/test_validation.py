"""Validation during unlearning: the validation set, its scores, the kept checkpoint, early stopping, resume, and no test read."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tracing.errors import AmnesiaError
from unlearn.api import run_unlearning, train_unlearning
from unlearn.data import SemEvalData, load_semeval
from unlearn.eval import EvalConfig, run_evaluation
from unlearn.eval import metrics
from unlearn.eval.nll import document_nll
from unlearn.eval.validation import score_validation, selection_value, validation_set
from unlearn.models import ModelOptions, load_model
from unlearn.config import UnlearnConfig
from unlearn.trainer import list_checkpoints

CPU = ModelOptions(device="cpu", dtype="float32")
FAST = dict(layers="0-1", kind="mlp", batch_size=16, grad_accum=1, lr=1e-3, logging_steps=50, seed=0, eval_rows=8)


@pytest.fixture(scope="module")
def data(fixture_world):
    return load_semeval(fixture_world)


def test_validation_set_reads_only_the_validation_part(data):
    vs = validation_set(data, rows=5, seed=0)
    assert [r["split"] for r in vs.rows] == ["forget"] * 5 + ["retain"] * 5
    val_ids = set(data.get("forget", "validation")["id"]) | set(data.get("retain", "validation")["id"])
    assert {r["id"] for r in vs.rows} <= val_ids
    assert vs.members == list(data.mia_validation["member"]["document"]) and vs.nonmembers == list(data.mia_validation["nonmember"]["document"])
    assert not set(vs.members + vs.nonmembers) & set(list(data.mia["member"]["document"]) + list(data.mia["nonmember"]["document"]))
    assert validation_set(data, rows=5, seed=0).rows == vs.rows and validation_set(data, rows=5, seed=1).rows != vs.rows  # seeded
    assert len(validation_set(data, rows=None).rows) == len(data.get("forget", "validation")) + len(data.get("retain", "validation"))
    no_val = SemEvalData(source="x", splits={k: v for k, v in data.splits.items() if k.endswith("train")})
    with pytest.raises(AmnesiaError, match="x: no forget_validation or retain_validation split: validation during unlearning"):
        validation_set(no_val)


def test_validation_scores_are_the_official_metrics_on_those_rows(fixture_target, data):
    model, tok = load_model(fixture_target, CPU)
    vs = validation_set(data, rows=6, seed=0)
    scores = score_validation(model, tok, vs)
    # knowledge is the official exact match of the same rows' full (256-token) generations
    full = run_evaluation(model, tok, data, EvalConfig(splits="validation", mmlu="off", mia="off"), progress=False).predictions
    by_id = {p["id"]: p for p in full}
    forget_qa = [by_id[r["id"]]["knowledge"] for r in vs.rows if r["split"] == "forget" and by_id[r["id"]]["knowledge"] is not None]
    assert scores["forget_knowledge"] == pytest.approx(sum(forget_qa) / len(forget_qa))
    auc = metrics.mia_auc(document_nll(model, tok, vs.members), document_nll(model, tok, vs.nonmembers))
    assert scores["mia_auc"] == pytest.approx(auc) and scores["mia_score"] == pytest.approx(metrics.mia_score(auc))
    assert scores["final"] == pytest.approx((scores["task"] + scores["mia_score"]) / 2)
    assert selection_value(scores, "mia") == scores["mia_score"] and selection_value({"task": None}, "task") == -math.inf


def test_validation_min_k_on_answer_tokens_is_privleaks_statistic(fixture_target, data, tmp_path):
    """validation_mia min_k + tokens answer: Min-K% (k 0.4) of the tokens after each document's prompt, by hand."""
    import dataclasses
    import json

    from unlearn.data import load_mia
    from unlearn.eval.nll import completion_labels, sequence_token_nll
    from unlearn.eval.metrics import min_k_score

    model, tok = load_model(fixture_target, CPU)
    docs = {name: list(data.mia_validation[name]["document"])[:6] for name in ("member", "nonmember")}
    for name, rows in docs.items():  # the first word of each document as its prompt
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"document": d, "prompt": d.split(" ")[0] + " "}) + "\n" for d in rows))
    mia = load_mia(tmp_path)
    vs = validation_set(dataclasses.replace(data, mia_validation=mia), rows=2, seed=0, mia_attack="min_k", mia_tokens="answer")
    assert vs.member_prompts == [d.split(" ")[0] + " " for d in docs["member"]]
    by_hand = {}
    for name in ("member", "nonmember"):
        pairs = [completion_labels(tok, d.split(" ")[0] + " ", d[len(d.split(" ")[0]) + 1:]) for d in docs[name]]
        by_hand[name] = [min_k_score(v, 0.4) for v in sequence_token_nll(model, pairs)]
    auc = metrics.mia_auc(by_hand["member"], by_hand["nonmember"])
    scores = score_validation(model, tok, vs)
    assert scores["mia_auc"] == pytest.approx(auc) and scores["mia_score"] == pytest.approx(metrics.mia_score(auc))
    loss_doc = score_validation(model, tok, dataclasses.replace(vs, mia_attack="loss", mia_tokens="document"))["mia_auc"]
    assert loss_doc == pytest.approx(metrics.mia_auc(document_nll(model, tok, docs["member"]), document_nll(model, tok, docs["nonmember"])))
    with pytest.raises(AmnesiaError, match="member.jsonl has no 'prompt' field: validation_mia_tokens answer"):
        validation_set(data, rows=2, mia_tokens="answer")
    (tmp_path / "member.jsonl").write_text(json.dumps({"document": "abc", "prompt": "xyz"}) + "\n")
    with pytest.raises(AmnesiaError, match="member.jsonl: document 1: 'prompt' must be a string that begins its 'document'"):
        load_mia(tmp_path)


class Weights(TrainerCallback):
    """The trainable weights at the end of every optimizer step."""

    def __init__(self):
        self.at = {}
        self.model = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.at[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Recording:
    """A tokenizer proxy that records every text it is asked to tokenize."""

    def __init__(self, tok):
        self.__dict__["_tok"], self.__dict__["texts"] = tok, []

    def __call__(self, text, *args, **kwargs):
        self.texts.extend([text] if isinstance(text, str) else list(text))
        return self._tok(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __setattr__(self, name, value):
        setattr(self._tok, name, value)


def test_keeps_the_best_validation_step_and_never_reads_the_test(fixture_target, data):
    model, tok = load_model(fixture_target, CPU, for_training=True)
    spy, weights = Recording(tok), Weights()
    config = UnlearnConfig(**FAST, max_steps=4, eval_steps=1)
    run = train_unlearning(model, spy, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, device="cpu",
                           data=data, callbacks=[weights])
    v = run.report["validation"]
    assert [h["step"] for h in v["history"]] == [0, 1, 2, 3, 4]
    best = max((h for h in v["history"] if h["step"] > 0), key=lambda h: h["final"])
    assert v["best_step"] == best["step"] and v["best"] == best and v["select_by"] == "final"
    kept = {n: p for n, p in run.model.named_parameters() if p.requires_grad}
    assert all(torch.equal(kept[n], weights.at[best["step"]][n]) for n in kept)  # the returned model is the best step's
    test_docs = set(data.mia["member"]["document"]) | set(data.mia["nonmember"]["document"])
    seen = set(spy.texts)
    assert not seen & test_docs  # the test MIA documents were never tokenized during training
    assert set(data.mia_validation["member"]["document"]) <= seen  # (the validation ones were)


def test_patience_stops_early_and_select_by_mia(fixture_target, data, monkeypatch):
    import unlearn.selection as selection

    falling = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])

    def fake(model, tok, vs, batch_size=None):
        value = next(falling)
        return {"final": value, "task": value, "mia_score": 1 - value, "mia_auc": 0.5}

    monkeypatch.setattr(selection, "score_validation", fake)
    model, tok = load_model(fixture_target, CPU, for_training=True)
    config = UnlearnConfig(**FAST, max_steps=10, eval_steps=1, patience=2)
    run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, device="cpu", data=data)
    v = run.report["validation"]
    assert v["best_step"] == 1 and v["stopped_early"] and run.report["steps"] == 3  # steps 2 and 3 did not improve
    falling = iter([0.5, 0.9, 0.8, 0.7])
    monkeypatch.setattr(selection, "score_validation", lambda *a, **k: {"final": (x := next(falling)), "task": x, "mia_score": 1 - x})
    model, tok = load_model(fixture_target, CPU, for_training=True)
    run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), UnlearnConfig(**FAST, max_steps=3, eval_steps=1, select_by="mia"),
                           progress=False, device="cpu", data=data)
    assert run.report["validation"]["best_step"] == 3  # the highest MIA score (lowest final)


def test_select_by_forgotten_keeps_the_first_step_at_the_floor(fixture_target, data, monkeypatch):
    """MUSE's rule: the first step whose forget knowledge is at or below the floor is kept and training
    stops there; until a step reaches it, the lowest forget knowledge is the best."""
    import unlearn.selection as selection

    def run(values, floor, max_steps):
        it = iter(values)
        monkeypatch.setattr(selection, "score_validation", lambda *a, **k: {"final": 0.5, "forget_knowledge": next(it)})
        model, tok = load_model(fixture_target, CPU, for_training=True)
        config = UnlearnConfig(**FAST, max_steps=max_steps, eval_steps=1, select_by="forgotten", select_floor=floor)
        return train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, device="cpu", data=data).report

    report = run([0.9, 0.6, 0.3, 0.2, 0.1, 0.0], 0.25, 6)  # step 0 is the target's score
    v = report["validation"]
    assert (v["best_step"], v["reached_step"], v["floor"], v["stopped_early"], report["steps"]) == (3, 3, 0.25, True, 3)
    v = run([0.9, 0.6, 0.3, 0.4], 0.0, 3)["validation"]  # never at the floor: the lowest
    assert (v["best_step"], v["reached_step"], v["stopped_early"]) == (2, None, False)


class Interrupted(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise Interrupted


def test_resume_keeps_the_same_best_step(fixture_world, fixture_target, tmp_path):
    config = UnlearnConfig(**FAST, max_steps=4, eval_steps=1, save_steps=2)
    full = run_unlearning(fixture_target, fixture_world, tmp_path / "full", config, model_options=CPU, progress=False)
    with pytest.raises(Interrupted):
        run_unlearning(fixture_target, fixture_world, tmp_path / "res", config, model_options=CPU, progress=False, callbacks=[InterruptAfterSave(2)])
    ckpt = list_checkpoints(tmp_path / "res.checkpoints")[0][-1]
    assert (ckpt / "best_trainable.safetensors").is_file()
    resumed = run_unlearning(fixture_target, fixture_world, tmp_path / "res", config, model_options=CPU, progress=False, resume=True)
    assert resumed["validation"]["best_step"] == full["validation"]["best_step"]
    assert resumed["validation"]["history"] == full["validation"]["history"]
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "res" / "model.safetensors"))
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_errors(fixture_target, data):
    model, tok = load_model(fixture_target, CPU, for_training=True)
    with pytest.raises(AmnesiaError, match="eval_steps is set but no validation data was given"):
        train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), UnlearnConfig(**FAST, max_steps=1, eval_steps=1), progress=False, device="cpu")
    no_mia = SemEvalData(source="nomia", splits=data.splits)
    with pytest.raises(AmnesiaError, match="select_by mia: nomia has no mia_data/validation/member.jsonl and nonmember.jsonl"):
        train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), UnlearnConfig(**FAST, max_steps=1, eval_steps=1, select_by="mia"),
                         progress=False, device="cpu", data=no_mia)
