"""The TOFU evaluation on a tiny random OLMo with the real tokenizer: batched numbers == a plain one-row loop.

The reference here is TOFU's recipe written out for one row at a time: ``model(ids, labels=…)``
for each answer conditioned on its question with the EOS appended (OpenUnlearning's data
pipeline), ``model.generate`` for each question, the per-token losses from one row's logits. The evaluation must give the same numbers bit for bit
(fp32, one thread), and its aggregates must be the TOFU formulas applied to its own rows.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_olmo, shared_path

from tracing.errors import AmnesiaError
from unlearn.eval.nll import (
    NLLOptions,
    completion_labels,
    sequence_nll,
    sequence_token_nll,
)
from pipelines.tofu.config import TofuEvalConfig
from pipelines.tofu.evaluation import (
    PREDICTION_COLUMNS,
    SETS,
    compare_to_retain,
    run_tofu_evaluation,
)
from unlearn.models import load_tokenizer
from pipelines.tofu.data import load_tofu, question_text

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]
LIMIT = 3
CONFIG = TofuEvalConfig(limit=LIMIT, max_new_tokens=6, batch_size=4, generation_batch_size=4)


@pytest.fixture(scope="module")
def tok(olmo_tokenizer_dir):
    return load_tokenizer(olmo_tokenizer_dir)


@pytest.fixture(scope="module")
def model(tok):
    return random_olmo(tok)


@pytest.fixture(scope="module")
def data():
    return load_tofu(shared_path("data", "tofu"), "forget01")


@pytest.fixture(scope="module")
def evaluation(model, tok, data):
    return run_tofu_evaluation(model, tok, data, CONFIG)


def _rows(evaluation, name):
    return [p for p in evaluation.predictions if p["set"] == name]


@torch.no_grad()
def _loss(model, tok, question: str, answer: str, eos: bool = True) -> float:
    ids = tok(question + answer)["input_ids"] + ([tok.eos_token_id] if eos else [])
    labels = [-100] * len(tok(question)["input_ids"]) + ids[len(tok(question)["input_ids"]):]
    return model(torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()


def _eos_pair(tok, question: str, answer: str) -> tuple[list[int], list[int]]:
    """OpenUnlearning's row: question + answer + EOS, the question masked."""
    ids = tok(question + answer)["input_ids"] + [tok.eos_token_id]
    n = len(tok(question)["input_ids"])
    return ids, [-100] * n + ids[n:]


@torch.no_grad()
def _token_nll(model, ids: list[int], labels: list[int]) -> list[float]:
    logits = model(torch.tensor([ids])).logits[0, :-1].float()
    target = torch.tensor(labels[1:])
    nll = torch.nn.functional.cross_entropy(logits, target, reduction="none", ignore_index=-100)
    return nll[target != -100].tolist()


def test_losses_equal_one_row_at_a_time(model, tok, data, evaluation):
    sources = {"forget": data.forget_perturbed, "retain": data.retain_perturbed,
               "real_authors": data.real_authors_perturbed, "world_facts": data.world_facts_perturbed}
    for name in SETS:
        records = _rows(evaluation, name)
        assert [r["index"] for r in records] == list(range(LIMIT))
        for record, row in zip(records, sources[name][:LIMIT]):
            q = question_text(row["question"], "raw")
            assert record["answer_nll"] == _loss(model, tok, q, row["answer"]), (name, record["index"])
            assert record["perturbed_nlls"] == [_loss(model, tok, q, wrong) for wrong in row["perturbed_answer"]]
            paraphrased = _loss(model, tok, q, row["paraphrased_answer"]) if name in ("forget", "retain") else record["answer_nll"]
            if name in ("forget", "retain"):
                assert record["paraphrased_nll"] == paraphrased
            else:
                assert record["paraphrased_nll"] is None  # TOFU compares the answer itself
            mean_pert = sum(record["perturbed_nlls"]) / len(record["perturbed_nlls"])
            assert record["truth_ratio_stat"] == pytest.approx(math.exp(mean_pert - paraphrased), rel=1e-12)
            assert record["truth_ratio"] == pytest.approx(math.exp(paraphrased - mean_pert), rel=1e-12)  # R_truth: OpenUnlearning's per-row value
            assert record["perturbed_probability"] == pytest.approx(sum(math.exp(-x) for x in record["perturbed_nlls"]) / len(record["perturbed_nlls"]), rel=1e-12)
            if name in ("forget", "retain"):
                assert record["paraphrased_probability"] == pytest.approx(math.exp(-paraphrased), rel=1e-12)


def test_without_eos_the_answer_alone(model, tok, data):
    """--no-answer-eos: each answer scored as unlearning trains it (no EOS), Min-K% over every answer token."""
    result = run_tofu_evaluation(model, tok, data, TofuEvalConfig(limit=2, max_new_tokens=2, batch_size=4, answer_eos=False))
    assert result.scores["conventions"]["answer_eos"] is False and result.scores["conventions"]["openunlearning"] is False
    for record, row in zip(_rows(result, "forget"), data.forget_perturbed[:2]):
        assert record["answer_nll"] == _loss(model, tok, question_text(row["question"], "raw"), row["answer"], eos=False)
    for record, row in zip(_rows(result, "holdout"), data.holdout[:2]):
        tokens = _token_nll(model, *completion_labels(tok, question_text(row["question"], "raw"), row["answer"]))
        count = max(1, int(len(tokens) * 0.4))
        assert record["min_k_score"] == pytest.approx(sum(sorted(tokens)[-count:]) / count, rel=1e-12)


@torch.no_grad()
def test_generation_equals_one_row_at_a_time(model, tok, evaluation):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for name in SETS:
        for record in _rows(evaluation, name):
            ids = tok(question_text(record["question"], "raw"), return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=CONFIG.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            assert record["generated"] == text, (name, record["index"])
            assert record["rouge_l_recall"] == scorer.score(record["answer"], text)["rougeL"].recall


def test_membership_attacks_equal_one_row_at_a_time(model, tok, data, evaluation):
    """Each membership score from a one-row computation written from its definition, with
    OpenUnlearning's tokens: the loss over the answer and its EOS; Min-K% and Min-K%++ over the
    answer without the EOS; zlib = loss / zlib-compressed bytes of the decoded answer."""
    import zlib

    rows = data.forget[:LIMIT] + data.holdout[:LIMIT]
    pairs = [_eos_pair(tok, question_text(r["question"], "raw"), r["answer"]) for r in rows]
    assert pairs == [completion_labels(tok, question_text(r["question"], "raw"), r["answer"], eos=True) for r in rows]
    reference = [_token_nll(model, ids, labels) for ids, labels in pairs]
    assert sequence_token_nll(model, pairs, NLLOptions(batch_size=4)) == reference
    means = sequence_nll(model, pairs, NLLOptions(batch_size=4))
    for tokens, mean in zip(reference, means):
        assert sum(tokens) / len(tokens) == pytest.approx(mean, rel=1e-6)
    scored = _rows(evaluation, "forget") + _rows(evaluation, "holdout")
    for record, tokens, (ids, labels), row in zip(scored, reference, pairs, rows):
        without_eos = tokens[:-1]
        count = max(1, int(len(without_eos) * 0.4))
        assert record["min_k_score"] == pytest.approx(sum(sorted(without_eos)[-count:]) / count, rel=1e-12)
        assert record["loss_score"] == pytest.approx(sum(tokens) / len(tokens), rel=1e-12)
        text = tok.decode([t for t in labels if t != -100], skip_special_tokens=True)
        assert text.strip() == row["answer"].strip()
        assert record["zlib_score"] == pytest.approx(record["loss_score"] / len(zlib.compress(text.encode("utf-8"))), rel=1e-12)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), dim=-1)
        where = [t - 1 for t in range(1, len(labels)) if labels[t] != -100][:-1]  # positions predicting the answer, not its EOS
        z = []
        for pos in where:
            mu = (logp[pos].exp() * logp[pos]).sum()
            var = (logp[pos].exp() * logp[pos] ** 2).sum() - mu ** 2
            z.append(float((logp[pos, ids[pos + 1]] - mu) / var.clamp(min=1e-6).sqrt()))
        k = max(1, int(len(z) * 0.4))
        assert record["min_k_plus_plus_score"] == pytest.approx(-sum(sorted(z)[:k]) / k, rel=1e-5)  # float32 token losses
        hits = [int(logp[pos].argmax()) == ids[pos + 1] for pos in where]
        if record["set"] == "forget":
            assert record["exact_memorization"] == sum(hits) / len(hits)
            suffix = len(hits)
            while suffix and hits[suffix - 1]:
                suffix -= 1
            assert record["extraction_strength"] == 1 - suffix / len(hits)


def test_token_nll_of_short_and_empty_rows(model, tok):
    pairs = [completion_labels(tok, "Who", " is"), completion_labels(tok, "Who", ""), (tok("a b c")["input_ids"], tok("a b c")["input_ids"])]
    got = sequence_token_nll(model, pairs, NLLOptions(batch_size=3))
    assert got == [_token_nll(model, *pairs[0]), [], _token_nll(model, *pairs[2])]
    assert len(got[2]) == len(pairs[2][0]) - 1


def test_document_tokens_for_membership(model, tok, data):
    result = run_tofu_evaluation(model, tok, data, TofuEvalConfig(limit=2, max_new_tokens=2, batch_size=4, mia_tokens="document"))
    for record, row in zip(_rows(result, "holdout"), data.holdout[:2]):
        ids = tok(question_text(row["question"], "raw") + row["answer"])["input_ids"] + [tok.eos_token_id]
        tokens = _token_nll(model, ids, ids)
        assert record["loss_score"] == pytest.approx(sum(tokens) / len(tokens), rel=1e-12)
    assert result.scores["mia.tokens"] == "document"


def test_scores_are_tofu_formulas_of_the_rows(evaluation):
    s = evaluation.scores
    assert s["kind"] == "tofu_scores" and s["split"] == "forget01" and s["mia.k"] == 0.4
    for name in SETS:
        rows = _rows(evaluation, name)
        assert s[f"{name}.rows"] == LIMIT
        for key in ("probability", "rouge_l_recall", "truth_ratio_score"):
            assert 0.0 <= s[f"{name}.{key}"] <= 1.0, (name, key)
        if name in ("forget", "retain"):
            expected = sum(math.exp(-r["answer_nll"]) for r in rows) / LIMIT
        else:
            expected = sum(math.exp(-r["answer_nll"]) / (math.exp(-r["answer_nll"]) + sum(math.exp(-x) for x in r["perturbed_nlls"])) for r in rows) / LIMIT
        assert s[f"{name}.probability"] == pytest.approx(expected, rel=1e-12)
        stats = [r["truth_ratio_stat"] for r in rows]
        mapped = [min(x, 1 / x) for x in stats] if name == "forget" else [max(0.0, 1 - 1 / x) for x in stats]
        assert s[f"{name}.truth_ratio_score"] == pytest.approx(sum(mapped) / LIMIT, rel=1e-12)
    nine = [s[f"{n}.{k}"] for n in ("retain", "real_authors", "world_facts") for k in ("probability", "rouge_l_recall", "truth_ratio_score")]
    expected_utility = 0.0 if min(nine) == 0 else len(nine) / sum(1 / v for v in nine)
    assert s["model_utility"] == pytest.approx(expected_utility) and 0.0 <= s["model_utility"] <= 1.0
    assert s["forget.truth_ratios"] == [r["truth_ratio"] for r in _rows(evaluation, "forget")]
    for name in SETS:
        rows = _rows(evaluation, name)
        for sub in ("perturbed_probability", "perturbed_rouge_l_recall") + (("paraphrased_probability", "paraphrased_rouge_l_recall") if name in ("forget", "retain") else ()):
            assert s[f"{name}.{sub}"] == pytest.approx(sum(r[sub] for r in rows) / LIMIT, rel=1e-12), (name, sub)
    forget = _rows(evaluation, "forget")
    for metric in ("exact_memorization", "extraction_strength"):
        assert s[f"forget.{metric}"] == pytest.approx(sum(r[metric] for r in forget) / LIMIT, rel=1e-12)
    assert s["conventions"] == {"answer_eos": True, "max_new_tokens": 6, "mia_tokens": "answer", "extraction_strength": "definition", "openunlearning": False}
    assert TofuEvalConfig().max_new_tokens == 200  # OpenUnlearning's budget by default
    for key in ("mia.min_k_auc", "mia.loss_auc", "mia.zlib_auc", "mia.min_k_plus_plus_auc"):
        assert 0.0 <= s[key] <= 1.0, key
    assert s["mia.attacks"] == ["min_k", "loss", "zlib", "min_k++"] and "mia.gradnorm_auc" not in s
    assert s["mia.loss_scores"]["holdout"] == [r["loss_score"] for r in _rows(evaluation, "holdout")]
    assert s["mia.forget_rows"] == s["mia.holdout_rows"] == LIMIT
    assert any("limit 3" in w for w in s["warnings"])
    assert all(set(p) == set(PREDICTION_COLUMNS) for p in evaluation.predictions)
    assert set(evaluation.timings) == {"nll_s", "generation_s", "mia_s", "total_s"}
    assert s["generation"]["largest_batch"] > 1  # real batches, with padding


def test_compare_to_retain(evaluation):
    itself = compare_to_retain(evaluation.scores, evaluation.scores)
    assert itself["forget_quality"] == 1.0 and itself["ks_statistic"] == 0.0
    assert itself["privleak"] == 0.0 and itself["privleak_loss"] == 0.0
    assert itself["mia.reference_auc"] == 0.5  # every loss minus itself: no row tells members apart
    lower = {**evaluation.scores, "mia.loss_scores": {k: [x + (1.0 if k == "forget" else 0.0) for x in v] for k, v in evaluation.scores["mia.loss_scores"].items()}}
    assert compare_to_retain(evaluation.scores, lower)["mia.reference_auc"] == 1.0  # forget rows 1 nat easier than under the reference: members
    with pytest.raises(AmnesiaError, match="schema 1, expected 2"):
        compare_to_retain(evaluation.scores, {**evaluation.scores, "schema": 1})
    other = {**evaluation.scores, "split": "forget05"}
    with pytest.raises(AmnesiaError, match="split: 'forget01' in the scores but 'forget05' in the retain model's"):
        compare_to_retain(evaluation.scores, other)
    with pytest.raises(AmnesiaError, match="kind 'scores', expected 'tofu_scores'"):
        compare_to_retain(evaluation.scores, {"kind": "scores"})


@pytest.mark.parametrize(("changes", "message"), [
    ({"mink_k": 0.0}, "mink_k 0.0: expected a fraction"),
    ({"mia_tokens": "question"}, "mia_tokens 'question'"),
    ({"mia_attacks": ("min_k", "ref")}, r"mia_attacks \['ref'\]: expected some of min_k, loss, zlib, min_k\+\+, gradnorm"),
    ({"limit": 0}, "limit 0: expected a positive integer"),
    ({"prompt_format": "json"}, "prompt_format 'json'"),
])
def test_config_errors(changes, message):
    with pytest.raises(AmnesiaError, match=message):
        TofuEvalConfig(**changes).check()


def test_context_too_short_is_one_line(tok, data):
    short = random_olmo(tok, small=True, max_position_embeddings=16)
    with pytest.raises(AmnesiaError, match=r"forget row 0 \(answer\) is \d+ tokens, longer than the model's context of 16") as info:
        run_tofu_evaluation(short, tok, data, TofuEvalConfig(limit=1))
    assert "\n" not in str(info.value)


def test_chat_format_scores_the_question_as_a_user_turn(model, tok, data):
    """prompt_format chat: the question rendered by the chat template (no newline appended), the
    answer scored after it — the same numbers as a one-row loop on the rendered text."""
    import copy

    chat = copy.deepcopy(tok)
    chat.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    result = run_tofu_evaluation(model, chat, data, TofuEvalConfig(prompt_format="chat", limit=2, max_new_tokens=2, batch_size=4))
    assert result.scores["prompt_format"] == "chat"
    for record, row in zip(_rows(result, "retain"), data.retain_perturbed[:2]):
        prompt = f"<|user|>{row['question']}\n<|assistant|>"
        assert record["answer_nll"] == _loss(model, chat, prompt, row["answer"])
    holdout = _rows(result, "holdout")[0]
    ids, labels = _eos_pair(chat, f"<|user|>{data.holdout[0]['question']}\n<|assistant|>", data.holdout[0]["answer"])
    tokens = _token_nll(model, ids, labels)
    assert holdout["loss_score"] == pytest.approx(sum(tokens) / len(tokens), rel=1e-12)


def test_question_template_is_the_prompt(model, tok, data):
    template = "Q: {question}\nA:"
    result = run_tofu_evaluation(model, tok, data, TofuEvalConfig(limit=2, max_new_tokens=2, batch_size=4, question_template=template))
    for record, row in zip(_rows(result, "forget"), data.forget_perturbed[:2]):
        assert record["answer_nll"] == _loss(model, tok, f"Q: {row['question']}\nA:", row["answer"])


def test_gradnorm_attack_equals_a_plain_backward(model, tok, data):
    """mia_attacks gradnorm: per row, the mean over parameter tensors of the L2 norm of the gradient
    of the answer's mean token NLL (without its EOS), one row at a time — and the model's gradients left clear."""
    result = run_tofu_evaluation(model, tok, data, TofuEvalConfig(limit=2, max_new_tokens=2, batch_size=4, mia_attacks=("min_k", "gradnorm")))
    assert result.scores["mia.attacks"] == ["min_k", "gradnorm"] and 0.0 <= result.scores["mia.gradnorm_auc"] <= 1.0
    assert "mia.zlib_auc" not in result.scores
    for record, row in zip(_rows(result, "holdout"), data.holdout[:2]):
        ids, labels = _eos_pair(tok, question_text(row["question"], "raw"), row["answer"])
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.tensor([ids])).logits[0, :-1], torch.tensor(labels[1:]), ignore_index=-100, reduction="none")
        scored = [t for t in range(len(labels) - 1) if labels[t + 1] != -100][:-1]
        loss[scored].mean().backward()
        norms = [q.grad.norm(2) for q in model.parameters() if q.grad is not None]
        assert record["gradnorm_score"] == pytest.approx(float(torch.stack(norms).mean()), rel=1e-5)
        model.zero_grad(set_to_none=True)
    assert all(q.grad is None for q in model.parameters())


def test_extraction_strength_and_exact_memorization_by_hand():
    from unlearn.eval.metrics import exact_memorization, extraction_strength

    assert exact_memorization([True, False, True, True]) == 0.75 and exact_memorization([]) is None
    assert extraction_strength([True, True, True]) == 1.0  # the question alone brings the whole answer
    assert extraction_strength([False, True, True, True]) == 0.75  # one true token, then the rest follows
    assert extraction_strength([True, False, True]) == pytest.approx(1 / 3)  # only the last token follows
    assert extraction_strength([True, True, False]) == 0.0  # not even the last token
    assert extraction_strength([True, True, False], openunlearning=True) == pytest.approx(1 / 3)  # its loop stops at k = n - 1
    assert extraction_strength([False], openunlearning=True) == 1.0 and extraction_strength([False]) == 0.0
