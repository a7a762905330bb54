"""MUSE's metrics (pipelines/muse): each against a hand computation, the reader's one-line errors,
the batched evaluation equal to MUSE's own one-row loops (its eval.py written out) on a tiny random
OLMo with the real tokenizer and the shared MUSE-News rows, and `amnesia evaluate-muse` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_olmo, shared_path

from pipelines.muse import metrics as mm
from pipelines.muse.config import AUC_RETRAIN, MuseEvalConfig
from pipelines.muse.data import load_muse
from pipelines.muse.evaluation import compare_to_retain, run_muse_evaluation
from tracing.errors import AmnesiaError
from unlearn.generation import clean_up_spaces
from unlearn.models import load_tokenizer

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]
ROOT = Path(__file__).resolve().parents[1]
LIMIT = 2
CONFIG = MuseEvalConfig(limit=LIMIT, verbmem_max_new_tokens=8, knowmem_max_new_tokens=6, batch_size=1, generation_batch_size=2)


def test_metrics_by_hand():
    # ROUGE-L F1, unstemmed: LCS "the cat on the mat" = 5 of 6 words each side
    assert mm.rouge_l("the cat sat on the mat", "the cat lay on the mat")["f1"] == pytest.approx(5 / 6)
    assert mm.rouge_l("cats running", "cat run")["f1"] == 0.0  # no stemmer (TOFU's and SemEval's scorer stems)
    r = mm.rouge_l("a b c d", "a b")
    assert r["recall"] == 0.5 and r["f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    icl = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    assert mm.knowmem_prompt("Q?", icl) == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q?\nAnswer: "
    assert mm.knowmem_answer("1472\n\nQuestion: next") == "1472"
    assert mm.knowmem_answer(" Paris\nQuestion: x") == " Paris"  # no strip
    assert mm.knowmem_answer("Bob Question: x") == "Bob "
    # Min-40% of five token NLLs: the two largest (the two least likely tokens)
    assert mm.privleak_score([0.1, 3.0, 0.2, 5.0, 0.3], 0.4) == pytest.approx(4.0)
    # MUSE's AUC: forget 0, holdout 1, ranked by −score: memorised forget texts (low scores) → 0
    assert mm.privleak_auc([1.0, 2.0], [3.0, 4.0]) == 0.0 and mm.privleak_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert mm.privleak_auc([1.0, 3.0], [2.0, 4.0]) == 0.25
    assert mm.privleak(0.0, 0.5) == -100.0 and mm.privleak(0.4772, AUC_RETRAIN["news"]) == 0.0 and mm.privleak(0.6, 0.4) == pytest.approx(50.0)
    assert mm.mean_percent([0.5, 1.0]) == 75.0
    with pytest.raises(AmnesiaError, match=r"the model's AUC is 1.5 \(expected a value in \[0, 1\]\)"):
        mm.privleak(1.5, 0.5)


def test_reader_checks_every_file(tmp_path):
    data = load_muse(shared_path("data", "muse_news"))
    assert len(data.verbmem) == len(data.knowmem_forget) == len(data.knowmem_retain) == len(data.privleak_forget) == 100
    assert len(data.knowmem_forget_icl) == 10 and len(data.raw_forget) == 888  # one of the 889 raw articles is empty and len(data.privleak_retain) == 100

    def folder(**files) -> Path:
        root = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        base = {"verbmem/forget.json": [{"prompt": "p", "gt": "g"}], "privleak/forget.json": ["a"], "privleak/holdout.json": ["b"]}
        for name, value in {**base, **files}.items():
            if value is None:
                continue
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(value if isinstance(value, str) else json.dumps(value))
        return root

    assert load_muse(folder()).knowmem_forget is None  # MUSE-Books has no KnowMem: optional
    cases = [
        ({"verbmem/forget.json": None}, r"no verbmem/forget.json \(expected MUSE's layout"),
        ({"verbmem/forget.json": "{not json"}, r"verbmem/forget.json: not readable as JSON .*expected a JSON list of \{prompt, gt\} objects"),
        ({"verbmem/forget.json": {"prompt": "p"}}, r"verbmem/forget.json: expected a non-empty JSON list of \{prompt, gt\} objects, got dict"),
        ({"verbmem/forget.json": [{"prompt": "p"}]}, r"verbmem/forget.json: item 0: field 'gt' is missing \(expected a non-empty string\)"),
        ({"privleak/holdout.json": ["ok", 3]}, r"privleak/holdout.json: item 1 is int \(expected a non-empty article text\)"),
        ({"privleak/forget.json": []}, r"privleak/forget.json: expected a non-empty JSON list of article texts, got list \(empty\)"),
        ({"knowmem/forget_qa.json": [{"question": "q", "answer": "a"}]}, r"knowmem/forget_qa.json without knowmem/forget_qa_icl.json"),
    ]
    for files, message in cases:
        with pytest.raises(AmnesiaError, match=message) as info:
            load_muse(folder(**files))
        assert "\n" not in str(info.value)
    with pytest.raises(AmnesiaError, match="not a folder"):
        load_muse(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def tok(olmo_tokenizer_dir):
    return load_tokenizer(olmo_tokenizer_dir)


@pytest.fixture(scope="module")
def model(tok):
    return random_olmo(tok, max_position_embeddings=4096)


@pytest.fixture(scope="module")
def data():
    return load_muse(shared_path("data", "muse_news"))


@pytest.fixture(scope="module")
def evaluation(model, tok, data):
    return run_muse_evaluation(model, tok, data, CONFIG)


@torch.no_grad()
def _muse_generate(model, tok, prompt: str, max_new_tokens: int) -> str:
    """MUSE's loop for one row: tokenize with special tokens, greedy, decode skipping special tokens (transformers 4's clean-up)."""
    ids = tok(prompt, return_tensors="pt", add_special_tokens=True).input_ids
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return clean_up_spaces(tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)[0])


def test_evaluation_equals_muse_one_row_loops(model, tok, data, evaluation):
    from rouge_score import rouge_scorer
    from sklearn.metrics import auc, roc_curve

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rows = {s: [p for p in evaluation.predictions if p["set"] == s] for s in ("verbmem", "knowmem_forget", "knowmem_retain", "privleak_forget", "privleak_holdout")}
    f1 = []
    for record, row in zip(rows["verbmem"], data.verbmem[:LIMIT]):
        output = _muse_generate(model, tok, row["prompt"], 8)
        gt_short = clean_up_spaces(tok.batch_decode(tok(row["gt"], return_tensors="pt", add_special_tokens=True).input_ids[:, :8], skip_special_tokens=True)[0])
        assert (record["generated"], record["reference"]) == (output, gt_short)
        f1.append(scorer.score(gt_short, output)["rougeL"].fmeasure)
    assert evaluation.scores["verbmem_f"] == pytest.approx(np.mean(f1) * 100, rel=1e-12)
    for key, qa, icl in (("knowmem_forget", data.knowmem_forget, data.knowmem_forget_icl), ("knowmem_retain", data.knowmem_retain, data.knowmem_retain_icl)):
        general = "".join(f"Question: {q['question']}\nAnswer: {q['answer']}\n\n" for q in icl)
        f1 = []
        for record, row in zip(rows[key], qa[:LIMIT]):
            output = _muse_generate(model, tok, general + f"Question: {row['question']}\nAnswer: ", 6)
            for word in ("\n\n", "\nQuestion", "Question:"):
                output = output.split(word)[0]
            assert record["generated"] == output
            f1.append(scorer.score(row["answer"], output)["rougeL"].fmeasure)
        assert evaluation.scores["knowmem_f" if key == "knowmem_forget" else "knowmem_r"] == pytest.approx(np.mean(f1) * 100, rel=1e-12)
    # PrivLeak: MUSE's compute_ppl (every next token's log-prob), Min-40%, roc_curve on −score
    ppl = []
    for text in data.privleak_forget[:LIMIT] + data.privleak_holdout[:LIMIT]:
        ids = torch.tensor(tok.encode(text)).unsqueeze(0)
        with torch.no_grad():
            logits = model(ids).logits
        logp = torch.log_softmax(logits, dim=-1)
        all_prob = [logp[0, i, t].item() for i, t in enumerate(ids[0][1:])]
        ppl.append(float(-np.mean(np.sort(all_prob)[: int(len(all_prob) * 0.4)])))
    scored = rows["privleak_forget"] + rows["privleak_holdout"]
    for record, value in zip(scored, ppl):
        assert record["min_k_score"] == pytest.approx(value, rel=1e-5)
    y = np.array([0] * LIMIT + [1] * LIMIT)
    fpr, tpr, _ = roc_curve(y, -np.array(ppl))
    assert evaluation.scores["privleak_auc"] == pytest.approx(auc(fpr, tpr))
    assert evaluation.scores["corpus"] == "news"
    assert evaluation.scores["privleak"] == pytest.approx((evaluation.scores["privleak_auc"] - 0.4772) / 0.4772 * 100)
    assert "published" in evaluation.scores["privleak_reference"]


def test_compare_to_retain(evaluation):
    itself = compare_to_retain(evaluation.scores, evaluation.scores)
    assert itself["privleak"] == 0.0 and itself["retain_model.verbmem_f"] == evaluation.scores["verbmem_f"]
    with pytest.raises(AmnesiaError, match="verbmem_f.rows: 2 in the scores but 3 in the retain model's"):
        compare_to_retain(evaluation.scores, {**evaluation.scores, "verbmem_f.rows": 3})
    with pytest.raises(AmnesiaError, match="kind 'tofu_scores', expected 'muse_scores'"):
        compare_to_retain(evaluation.scores, {"kind": "tofu_scores"})


def test_evaluation_without_privleak(model, tok, data, evaluation):
    """privleak=False (the audit's held-out scoring): C1, C2, C4 as with it; C3 not computed, no PrivLeak rows."""
    lean = run_muse_evaluation(model, tok, data, CONFIG, privleak=False)
    for key in ("verbmem_f", "knowmem_f", "knowmem_r", "verbmem_f.rows", "knowmem_f.rows", "knowmem_r.rows"):
        assert lean.scores[key] == evaluation.scores[key], key
    assert lean.scores["privleak_auc"] is None and lean.scores["privleak"] is None and lean.scores["privleak.forget_rows"] == 0
    assert not any(r["set"].startswith("privleak") for r in lean.predictions) and "privleak_s" not in lean.timings
    assert any(r["set"].startswith("privleak") for r in evaluation.predictions)


def test_text_longer_than_the_context_is_one_line(tok, data):
    short = random_olmo(tok, small=True, max_position_embeddings=1024)
    with pytest.raises(AmnesiaError, match=r"privleak/forget.json item 0 is \d+ tokens, longer than the model's context of 1024 .*untruncated") as info:
        run_muse_evaluation(short, tok, data, MuseEvalConfig(limit=1, verbmem_max_new_tokens=2, knowmem_max_new_tokens=2))
    assert "\n" not in str(info.value)


def test_evaluate_muse_cli(model, tok, tmp_path):
    model_dir = tmp_path / "m"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "out"
    data = str(shared_path("data", "muse_news"))
    cmd = [sys.executable, "-m", "pipelines.cli", "evaluate-muse", "--model", str(model_dir), "--retain-model", str(model_dir), "--data", data,
           "--out", str(out), "--limit", "1", "--verbmem-max-new-tokens", "2", "--knowmem-max-new-tokens", "2", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "muse.json").read_text())
    assert summary["privleak"] == 0.0 and "the retain model" in summary["privleak_reference"]  # the model against itself
    assert (out / "scores.json").is_file() and (out / "retain" / "scores.json").is_file() and "PrivLeak (C3)" in r.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # no --overwrite: refused, nothing touched
    assert again.returncode != 0 and again.stderr.count("\n") == 1 and "scores.json" in again.stderr
    (tmp_path / "empty").mkdir()
    bad = subprocess.run([*cmd[:9], str(tmp_path / "empty"), "--out", str(tmp_path / "bad")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "verbmem/forget.json" in bad.stderr and not (tmp_path / "bad").exists()
