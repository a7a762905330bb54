"""The evaluation's pure parts, against hand-computed numbers: ROUGE recall, exact match, the
harmonic-mean aggregate with forget inversion, MIA AUC/score, MMLU micro/macro, reports, compare."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from tracing.errors import AmnesiaError
from unlearn.batching import plan_batches
from unlearn.eval import metrics
from unlearn.eval.mmlu import summarize
from unlearn.eval.report import PREDICTION_COLUMNS, compare, comparison_markdown, load_scores, predictions_csv, write_outputs
from unlearn.generation import clean_up_spaces


def test_rouge_recall_with_stemming():
    # tokens: the cat(s) were run(ning) quickli  vs  a cat run(s) quickli home  (Porter stems, > 3 letters)
    r = metrics.rouge_recall("The cats were running quickly", "a cat runs quickly home")
    assert r["rouge1"] == pytest.approx(3 / 5) and r["rougeL"] == pytest.approx(3 / 5)
    # same words, reversed order: every unigram is recalled, the longest common subsequence is 1 word
    r = metrics.rouge_recall("alpha beta gamma delta", "delta gamma beta alpha")
    assert r == {"rouge1": 1.0, "rougeL": 0.25}
    # recall is over the expected text: extra generated words cost nothing
    assert metrics.rouge_recall("bright stars", "many bright shining stars tonight")["rougeL"] == 1.0
    assert metrics.rouge_recall("bright stars", "")["rougeL"] == 0.0


def test_exact_match_normalisation():
    assert metrics.knowledge_score("Paris", "  paris \n") == 1
    assert metrics.knowledge_score("1976-03-29", "1976-03-29") == 1
    assert metrics.knowledge_score("PARIS", "paris") == 1
    assert metrics.knowledge_score("Paris", "Paris.") == 0  # punctuation is not stripped
    assert metrics.knowledge_score("New York", "New  York") == 0  # nor inner whitespace


def test_score_row_by_id_suffix():
    sc = metrics.score_row('"abc"sc1', "one two three", "one two")
    assert sc.kind == "sc" and sc.regurgitation == pytest.approx(2 / 3) and sc.knowledge is None
    qa = metrics.score_row("xyzqa3", "42", " 42 ")
    assert qa == metrics.RowScore("qa", knowledge=1)
    with pytest.raises(AmnesiaError, match="must end in sc<digit> or qa<digit>"):
        metrics.score_row("nosuffix", "a", "b")


def _split(values: dict[str, tuple[float, float]]) -> dict:
    out = {"overall-regurgitation-score": 0.0, "overall-knowledge-score": 0.0}
    for task, (reg, know) in values.items():
        out[task] = {"regurgitation-score": reg, "knowledge-score": know}
    return out


def test_harmonic_mean_inverts_forget_values():
    per_split = {
        "forget": _split({"Task1": (0.2, 0.5), "Task2": (0.4, 0.0)}),
        "retain": _split({"Task1": (0.9, 0.8), "Task2": (0.5, 0.25)}),
    }
    terms, missing = metrics.aggregate_terms(per_split)
    assert missing == []
    assert [t.value for t in terms] == pytest.approx([0.8, 0.5, 0.6, 1.0, 0.9, 0.8, 0.5, 0.25])
    assert terms[0].name == "forget-set Task1 regurgitation-score"
    # 8 / (1.25 + 2 + 5/3 + 1 + 10/9 + 1.25 + 2 + 4) = 8 / (128.5 / 9) = 72 / 128.5
    assert metrics.harmonic_mean([t.value for t in terms]) == pytest.approx(72 / 128.5)
    assert metrics.zero_terms_note(terms) is None


def test_harmonic_mean_zero_anywhere_and_fewer_tasks():
    forget_all_known = {"forget": _split({"Task2": (0.3, 1.0)}), "retain": _split({"Task2": (0.9, 0.6)})}
    terms, _ = metrics.aggregate_terms(forget_all_known)
    assert [t.value for t in terms] == pytest.approx([0.7, 0.0, 0.9, 0.6])
    assert metrics.harmonic_mean([t.value for t in terms]) == 0.0
    note = metrics.zero_terms_note(terms)
    assert note == "harmonic-mean-task-aggregate is 0 because forget-set Task2 knowledge-score = 1 (enters as 1 − 1 = 0)"
    retain_zero = {"forget": _split({"Task2": (0.3, 0.5)}), "retain": _split({"Task2": (0.0, 0.6)})}
    terms, _ = metrics.aggregate_terms(retain_zero)
    assert metrics.harmonic_mean([t.value for t in terms]) == 0.0
    assert "retain-set Task2 regurgitation-score = 0" in metrics.zero_terms_note(terms)
    # one task present: the harmonic mean of its 4 values; 4 / (1/0.7 + 1/0.5 + 1/0.9 + 1/0.6)
    terms, _ = metrics.aggregate_terms({"forget": _split({"Task2": (0.3, 0.5)}), "retain": _split({"Task2": (0.9, 0.6)})})
    assert metrics.harmonic_mean([t.value for t in terms]) == pytest.approx(4 / (1 / 0.7 + 2 + 1 / 0.9 + 1 / 0.6))
    assert metrics.harmonic_mean([]) is None


def test_split_scores_official_structure_and_missing_terms():
    rows = [
        {"task": "Task2", "regurgitation": 0.5, "knowledge": None},
        {"task": "Task2", "regurgitation": None, "knowledge": 1},
        {"task": "Task2", "regurgitation": None, "knowledge": 0},
        {"task": "Task1", "regurgitation": 0.25, "knowledge": None},
    ]
    s = metrics.split_scores(rows)
    assert list(s) == ["overall-regurgitation-score", "overall-knowledge-score", "Task1", "Task2"]
    assert s["overall-regurgitation-score"] == pytest.approx(0.375) and s["overall-knowledge-score"] == 0.5
    assert s["Task2"] == {"regurgitation-score": 0.5, "knowledge-score": 0.5}
    assert s["Task1"] == {"regurgitation-score": 0.25, "knowledge-score": None}
    terms, missing = metrics.aggregate_terms({"forget": s})
    assert missing == ["forget-set Task1 knowledge-score"] and len(terms) == 3


def test_mia_auc_and_score():
    same = [2.0] * 5
    assert metrics.mia_auc(same, same) == 0.5
    assert metrics.mia_score(metrics.mia_auc(same, same)) == 1.0
    members, nonmembers = [0.1, 0.2, 0.3], [1.0, 2.0, 3.0, 4.0]  # members have lower loss: perfectly separated
    assert metrics.mia_auc(members, nonmembers) == 1.0
    assert metrics.mia_score(1.0) == 0.0
    assert metrics.mia_auc(nonmembers, members) == 0.0 and metrics.mia_score(0.0) == 0.0
    # one swapped pair out of 2 x 2: AUC 3/4, score 1 - 2 * 0.25 = 0.5
    assert metrics.mia_auc([1.0, 3.0], [2.0, 4.0]) == 0.75 and metrics.mia_score(0.75) == 0.5


def test_mia_rejects_nan_losses():
    with pytest.raises(AmnesiaError, match=r"member document 2 has a NaN loss \(1 of 3 member losses"):
        metrics.mia_auc([1.0, math.nan, 2.0], [1.0])
    with pytest.raises(AmnesiaError, match="nonmember document 1 has an infinite loss"):
        metrics.mia_auc([1.0], [math.inf])
    with pytest.raises(AmnesiaError, match="no member losses"):
        metrics.mia_auc([], [1.0])


def test_final_aggregate():
    assert metrics.final_aggregate(0.5, 0.4, 0.9) == pytest.approx(0.6)
    assert metrics.final_aggregate(0.5, None, 0.9) == -1
    assert metrics.final_aggregate(0.5, 0.4, None) == -1


def test_mmlu_micro_macro_and_categories():
    samples = {
        "mmlu_anatomy": [{"acc": 1.0}, {"acc": 0.0}, {"acc": 1.0}, {"acc": 1.0}],  # 3/4
        "mmlu_philosophy": [{"acc": 0.0}, {"acc": 1.0}],  # 1/2
        "mmlu_astronomy": [{"acc": 0.0}, {"acc": 0.0}],  # 0/2
    }
    cats = {"anatomy": "stem", "astronomy": "stem", "philosophy": "humanities"}
    s = summarize(samples, cats)
    assert s["subjects"]["anatomy"] == {"acc": 0.75, "correct": 3, "total": 4, "category": "stem"}
    assert s["micro"] == pytest.approx(4 / 8) and s["macro"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert s["categories"]["stem"] == {"correct": 3, "total": 6, "subjects": 2, "acc": 0.5}
    assert s["categories"]["humanities"]["acc"] == 0.5 and s["questions"] == 8


def test_clean_up_spaces_matches_transformers4():
    assert clean_up_spaces("Hello , world ! Is it ? I do n't know . It 's fine") == "Hello, world! Is it? I don't know. It's fine"
    assert clean_up_spaces("1976-03-29") == "1976-03-29"


def test_plan_batches_longest_first_bounded_padding():
    lengths = [5, 40, 12, 39, 38, 6, 7, 20]
    batches = plan_batches(lengths, lambda width: 3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [1, 3, 4]  # the three longest
    for b in batches:
        assert len(b) <= 3 and min(lengths[i] for i in b) >= 0.5 * lengths[b[0]]
    assert plan_batches([], lambda w: 4) == []


def test_predictions_csv_and_outputs(tmp_path):
    preds = [
        {"id": "asc1", "task": "Task1", "split": "forget", "input": 'He said, "hi"\nthen', "expected_output": "x", "model_output": "",
         "nll": 0.1 + 0.2, "regurgitation": 1 / 3, "knowledge": None, "rouge1": 0.5},
        {"id": "aqa0", "task": "Task1", "split": "retain", "input": "q", "expected_output": "a", "model_output": "a",
         "nll": math.nan, "regurgitation": None, "knowledge": 1, "rouge1": None},
    ]
    rows = list(csv.DictReader(io.StringIO(predictions_csv(preds))))
    assert tuple(rows[0]) == PREDICTION_COLUMNS
    assert rows[0]["input"] == 'He said, "hi"\nthen' and float(rows[0]["nll"]) == 0.1 + 0.2 and float(rows[0]["regurgitation"]) == 1 / 3
    assert rows[0]["knowledge"] == "" and rows[1]["nll"] == "" and rows[1]["knowledge"] == "1"
    scores = {"forget-set": {}, "retain-set": {}, "aggregate-score": -1}
    paths = write_outputs(tmp_path / "o", scores, preds)
    assert json.loads(paths["scores"].read_text()) == scores
    with pytest.raises(AmnesiaError, match="predictions.csv already exists; pass --overwrite to replace it"):
        write_outputs(tmp_path / "o", scores, preds)
    write_outputs(tmp_path / "o", scores, preds, overwrite=True)
    assert not list((tmp_path / "o").glob(".tmp-*"))


def test_compare_directions_and_load_errors(tmp_path):
    before = {"forget-set": {"overall-regurgitation-score": 0.9, "overall-knowledge-score": 0.8, "Task2": {"regurgitation-score": 0.9, "knowledge-score": 0.8}},
              "retain-set": {"overall-regurgitation-score": 0.9, "overall-knowledge-score": 0.9, "Task2": {"regurgitation-score": 0.9, "knowledge-score": 0.9}},
              "mia_loss_acc": 1.0, "mia_final_score": 0.0, "mmlu_average": 0.40, "harmonic-mean-task-aggregate": 0.2, "aggregate-score": 0.2}
    after = json.loads(json.dumps(before))
    after["forget-set"]["overall-knowledge-score"] = 0.1
    after["retain-set"]["overall-knowledge-score"] = 0.7
    after["mia_loss_acc"] = 0.3
    after["aggregate-score"] = -1
    rows = {r["metric"]: r for r in compare(before, after)}
    assert rows["forget knowledge"]["improved"] is True and rows["forget knowledge"]["delta"] == pytest.approx(-0.7)
    assert rows["retain knowledge"]["improved"] is False
    assert rows["MIA AUC (mia_loss_acc)"]["improved"] is True  # 0.3 is closer to 0.5 than 1.0
    assert rows["aggregate score"]["after"] is None and rows["aggregate score"]["improved"] is None
    assert rows["forget regurgitation"]["improved"] is None  # unchanged
    md = comparison_markdown(list(rows.values()))
    assert "| forget knowledge | 0.8000 | 0.1000 | -0.7000 ✓ | lower |" in md
    with pytest.raises(AmnesiaError, match="scores file does not exist"):
        load_scores(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(AmnesiaError, match="not a JSON scores file"):
        load_scores(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(AmnesiaError, match="expected the keys forget-set and retain-set"):
        load_scores(tmp_path / "other.json")
    (tmp_path / "empty.json").write_text('{"forget-set": {}, "retain-set": {}}')
    with pytest.raises(AmnesiaError, match=r"empty.json: no metric to compare \(expected numbers such as forget-set/overall-regurgitation-score\)$"):
        load_scores(tmp_path / "empty.json")
    (tmp_path / "text.json").write_text('{"forget-set": {"overall-knowledge-score": "0.5"}, "retain-set": {}}')
    with pytest.raises(AmnesiaError, match=r"text.json: forget-set/overall-knowledge-score is str '0.5' \(expected a number\)$"):
        load_scores(tmp_path / "text.json")
    (tmp_path / "ok.json").write_text(json.dumps(before))
    assert load_scores(tmp_path / "ok.json") == before
