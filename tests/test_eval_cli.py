"""`amnesia evaluate` / `amnesia compare` and the Python API end to end on the fixture, and their
one-line errors (missing MIA files, malformed rows, existing outputs, unknown MMLU subjects)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from pipelines.cli import main
from tracing.errors import AmnesiaError
from unlearn.eval import EvalConfig, evaluate, run_evaluation
from unlearn.eval.report import PREDICTION_COLUMNS
from unlearn.models import ModelOptions, load_model

OFFICIAL_ORDER = ["forget-set", "retain-set", "mia_loss_acc", "mia_final_score", "mmlu_average", "aggregated-terms", "harmonic-mean-task-aggregate", "aggregate-score"]


@pytest.fixture
def offline(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("amnesia ")
    return err[0]


def test_evaluate_cli_end_to_end(tmp_path, capsys, offline, fixture_world, fixture_target, mmlu_dir):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(fixture_target), "--data", str(fixture_world), "--splits", "train", "--limit", "8",
            "--mmlu", str(mmlu_dir), "--mmlu-subjects", "anatomy,philosophy", "--mmlu-limit", "2", "--batch-size", "4",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "SemEval-2025 Task 4 metrics" in printed.out and "Aggregates" in printed.out and "wrote" in printed.out
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores)[: len(OFFICIAL_ORDER)] == OFFICIAL_ORDER
    for split in ("forget-set", "retain-set"):
        assert set(scores[split]) == {"overall-regurgitation-score", "overall-knowledge-score", "Task2"}
        assert set(scores[split]["Task2"]) == {"regurgitation-score", "knowledge-score"}
    assert scores["splits"] == "train" and scores["rows"] == {"forget": 8, "retain": 8}
    assert scores["mmlu"]["questions"] == 4 and scores["mmlu_average"] == scores["mmlu"]["micro"]
    assert scores["mia"]["members"] == scores["mia"]["nonmembers"] == 14
    # the memorizing target: members are far easier than non-members, forget rows are recalled
    assert scores["mia_loss_acc"] > 0.9 and scores["forget-set"]["overall-knowledge-score"] > 0.5
    assert scores["mia_final_score"] == pytest.approx(1 - 2 * abs(scores["mia_loss_acc"] - 0.5))
    expected_final = (scores["harmonic-mean-task-aggregate"] + scores["mmlu_average"] + scores["mia_final_score"]) / 3
    assert scores["aggregate-score"] == pytest.approx(expected_final)
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == PREDICTION_COLUMNS and len(rows) == 16
    knowledge = [int(r["knowledge"]) for r in rows if r["split"] == "forget" and r["id"][-3:-1] == "qa"]
    assert scores["forget-set"]["overall-knowledge-score"] == pytest.approx(sum(knowledge) / len(knowledge))
    assert all(r["regurgitation"] == "" for r in rows if r["id"][-3:-1] == "qa")

    # the same model again, without MMLU/MIA, against the first run as baseline
    second = tmp_path / "eval2"
    assert main(["evaluate", "--model", str(fixture_target), "--data", str(fixture_world), "--splits", "train", "--limit", "8",
                 "--mmlu", "off", "--mia", "off", "--device", "cpu", "--out", str(second), "--baseline", str(out / "scores.json")]) == 0
    printed = capsys.readouterr()
    assert "this model vs baseline" in printed.out and "aggregate-score is -1" in printed.err
    again = json.loads((second / "scores.json").read_text())
    assert again["aggregate-score"] == -1 and "mia_loss_acc" not in again and "mmlu_average" not in again
    assert again["forget-set"] == scores["forget-set"] and again["retain-set"] == scores["retain-set"]  # deterministic
    comparison = json.loads((second / "comparison.json").read_text())
    assert {r["metric"] for r in comparison["rows"]} >= {"forget knowledge", "MMLU average", "aggregate score"}
    assert "| forget knowledge |" in (second / "comparison.md").read_text()

    assert main(["compare", str(out), str(second / "scores.json"), "--markdown"]) == 0
    assert "| retain regurgitation |" in capsys.readouterr().out


def test_python_api_returns_scores_json(tmp_path, offline, fixture_world, fixture_target):
    model, tok = load_model(fixture_target, ModelOptions(device="cpu"))
    mia = tmp_path / "mia"
    mia.mkdir()
    for name in ("member", "nonmember"):
        shutil.copy(fixture_world / "mia_data" / f"{name}.jsonl", mia / f"{name}.jsonl")
    config = EvalConfig(splits="validation", limit=3, mmlu="off", mia=str(mia), batch_size=3, max_new_tokens=32)
    scores = evaluate(model, tok, fixture_world, config, out=tmp_path / "out", progress=False)
    assert json.loads((tmp_path / "out" / "scores.json").read_text()) == json.loads(json.dumps(scores))
    assert scores["splits"] == "validation" and scores["rows"] == {"forget": 3, "retain": 3}
    assert scores["mia"]["source"] == str(mia) and scores["aggregate-score"] == -1 and "mmlu_average" not in scores
    assert len(scores["aggregated-terms"]) == len(scores["aggregated-term-names"]) == 4
    assert scores["generation"]["tie_margin"] == 1e-3 and scores["generation"]["max_new_tokens"] == 32
    (mia / "nonmember.jsonl").unlink()
    with pytest.raises(AmnesiaError, match="has member.jsonl but no nonmember.jsonl"):
        run_evaluation(model, tok, fixture_world, config)
    with pytest.raises(AmnesiaError, match="predictions.csv already exists"):
        evaluate(model, tok, fixture_world, EvalConfig(mmlu="off"), out=tmp_path / "out")


def test_evaluate_cli_one_line_errors(tmp_path, capsys, offline, fixture_world, fixture_target):
    base = ["evaluate", "--model", str(fixture_target), "--device", "cpu", "--mmlu", "off"]
    # missing MIA files
    (tmp_path / "mia").mkdir()
    (tmp_path / "mia" / "member.jsonl").write_text('{"id": "1", "document": "Some text."}\n')
    err = _one_line_error(capsys, base + ["--data", str(fixture_world), "--mia", str(tmp_path / "mia"), "--out", str(tmp_path / "o1")])
    assert "has member.jsonl but no nonmember.jsonl" in err
    err = _one_line_error(capsys, base + ["--data", str(fixture_world), "--mia", str(tmp_path / "nomia"), "--out", str(tmp_path / "o1")])
    assert "MIA folder does not exist" in err
    # a malformed row
    bad = tmp_path / "bad"
    bad.mkdir()
    forget = [{"id": "p1sc1", "input": "a", "output": "b", "task": "Task2", "split": "forget"},
              {"id": "p1x", "input": "a", "output": "b", "task": "Task2", "split": "forget"}]
    (bad / "forget.jsonl").write_text("\n".join(json.dumps(r) for r in forget) + "\n")
    (bad / "retain.jsonl").write_text(json.dumps({"id": "p2qa0", "input": "q", "output": "a", "task": "Task2", "split": "retain"}) + "\n")
    err = _one_line_error(capsys, base + ["--data", str(bad), "--out", str(tmp_path / "o2")])
    assert "forget.jsonl: row 1: id 'p1x' must end in sc<digit> or qa<digit>" in err
    # outputs that exist, a bad baseline, an unknown MMLU subject, a bad option value
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "scores.json").write_text("{}")
    err = _one_line_error(capsys, base + ["--data", str(fixture_world), "--out", str(tmp_path / "o3")])
    assert "scores.json already exists; pass --overwrite to replace it" in err
    err = _one_line_error(capsys, base + ["--data", str(fixture_world), "--out", str(tmp_path / "o4"), "--baseline", str(tmp_path / "none.json")])
    assert "scores file does not exist" in err
    err = _one_line_error(capsys, ["evaluate", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(tmp_path / "o5"),
                                   "--mmlu", str(fixture_world), "--device", "cpu"])
    assert "no MMLU subjects" in err
    err = _one_line_error(capsys, base + ["--data", str(fixture_world), "--out", str(tmp_path / "o6"), "--splits", "validation", "--limit", "0"])
    assert "--limit 0: expected a positive number" in err
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o6").exists()


def test_auto_splits_score_the_rows_the_request_names(fixture_world):
    from unlearn.data import SemEvalData, load_semeval
    from unlearn.eval.core import choose_part

    data = load_semeval(fixture_world)
    assert choose_part(data, "auto") == "train"  # the validation rows select unlearning's checkpoint
    only_val = SemEvalData(source="v", splits={k: v for k, v in data.splits.items() if k.endswith("validation")})
    assert choose_part(only_val, "auto") == "validation"


EVALUATE_OPTIONS = [  # `amnesia evaluate`'s options before they were generated from EvalConfig's fields (and since)
    "--allow-pickle", "--allow-weight-mismatch", "--baseline", "--batch-size", "--clean-up-spaces", "--data", "--device", "--dtype", "--help",
    "--limit", "--max-new-tokens", "--mia", "--mmlu", "--mmlu-limit", "--mmlu-shots", "--mmlu-subjects", "--mmlu-threshold", "--model",
    "--no-clean-up-spaces", "--out", "--overwrite", "--prompt-format", "--quiet", "--splits", "--tie-margin", "--trust-remote-code", "-h",
]


def test_evaluate_options_are_evalconfig_fields():
    import argparse
    import dataclasses

    from pipelines.commands import evaluate as command
    from tracing.settings import flag, help_text, undeclared
    from unlearn.eval.config import EvalConfig

    assert undeclared(EvalConfig) == []
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    assert sorted(o for a in p._actions for o in a.option_strings) == EVALUATE_OPTIONS
    by_dest = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(EvalConfig):
        assert by_dest[f.name].option_strings[0] == flag(f.name) and by_dest[f.name].help == help_text(f).replace("%", "%%")
    assert command.config_from_args(p.parse_args(["--model", "m", "--data", "d", "--out", "o"])) == EvalConfig()
    args = p.parse_args(["--model", "m", "--data", "d", "--out", "o", "--mmlu-subjects", "anatomy, philosophy", "--no-clean-up-spaces", "--splits", "train"])
    assert command.config_from_args(args) == dataclasses.replace(EvalConfig(), mmlu_subjects=("anatomy", "philosophy"), clean_up_spaces=False, splits="train")
