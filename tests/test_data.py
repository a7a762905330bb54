"""The SemEval data layer: real shared files, the three layouts, and malformed inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracing.errors import AmnesiaError
from unlearn.data import format_summary, load_mia, load_semeval, load_split_dir, row_type, subject_id, summarize


def test_real_shared_counts(semeval_dir):
    data = load_semeval(semeval_dir)
    sizes = {name: len(ds) for name, ds in data.splits.items()}
    assert sizes == {"forget_train": 1112, "forget_validation": 254, "retain_train": 1136, "retain_validation": 278}
    assert {k: len(v) for k, v in data.mia.items()} == {"member": 150, "nonmember": 150}
    rows = summarize(data)
    by = {(r["split"], r["task"], r["row_type"]): r["rows"] for r in rows}
    # Task 2 has 1 sc + 5 qa per biography; Tasks 1 and 3 have 1 sc + 1 qa per document.
    assert by[("forget_train", "Task2", "qa")] == 5 * by[("forget_train", "Task2", "sc")]
    assert by[("forget_train", "Task1", "qa")] == by[("forget_train", "Task1", "sc")]
    assert sum(r["rows"] for r in rows if r["split"] == "forget_train") == 1112
    text = format_summary(data)
    assert "forget_train 1,112" in text and "retain_validation 278" in text


def test_ids_with_quotes_and_suffixes():
    assert row_type('"2ebbbb06-ab81-4bdf-af75-0157c7178a82"sc1') == "sc"
    assert row_type("90a0db01-1683-475d-9980-edf9e99d6f9fqa4") == "qa"
    assert subject_id('"2ebbbb06"qa0') == "2ebbbb06"
    with pytest.raises(AmnesiaError, match="must end in sc<digit> or qa<digit>"):
        row_type("abc-qa")


def _rows(n=3, split="forget"):
    prefix = "p" if split == "forget" else "r"  # an id names one row of one split
    return [{"id": f"{prefix}{i}qa0", "input": f"What is X{i}?", "output": f"{i}", "task": "Task2", "split": split} for i in range(n)]


def _write_parquet(path: Path, rows: list[dict], drop: str | None = None):
    cols = [c for c in ("id", "input", "output", "task", "split") if c != drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: [r[c] for r in rows] for c in cols}), path)


def _organizers(tmp_path: Path, forget=None, retain=None, drop=None) -> Path:
    root = tmp_path / "data_root"
    _write_parquet(root / "data" / "forget_train-00000-of-00001.parquet", _rows() if forget is None else forget, drop)
    _write_parquet(root / "data" / "retain_train-00000-of-00001.parquet", _rows(split="retain") if retain is None else retain)
    return root


def test_organizers_layout_minimal(tmp_path):
    data = load_semeval(_organizers(tmp_path))
    assert set(data.splits) == {"forget_train", "retain_train"}
    assert data.mia == {}
    assert data.get("forget")["output"] == ["0", "1", "2"]
    with pytest.raises(AmnesiaError, match="no forget_validation split"):
        data.get("forget", "validation")


def test_jsonl_layout(tmp_path):
    root = tmp_path / "jl"
    root.mkdir()
    (root / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    (root / "retain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(split="retain")))
    (root / "member.jsonl").write_text('{"id": "1", "document": "a b c"}\n')
    (root / "nonmember.jsonl").write_text('{"id": "2", "document": "d e f"}\n')
    data = load_semeval(root)
    assert len(data.get("forget")) == 3 and len(data.get("retain")) == 3
    assert data.mia["member"]["document"] == ["a b c"]
    assert len(load_split_dir(root / "forget.jsonl", "forget")) == 3


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_column", r"forget_train-00000-of-00001.parquet: missing column 'output'"),
        ("bad_id", r"row 1: id 'p1' must end in sc<digit> or qa<digit>"),
        ("empty_split", r"forget_train-00000-of-00001.parquet: split has no rows"),
        ("bad_task", r"task 'task 2' is not a task name"),
        ("wrong_split", r"split 'retain' in a forget file"),
        ("null_output", r"column 'output' must be a string, got NoneType"),
        ("duplicate_id", r"id 'p0qa0' repeats row 0"),
        ("unreadable", r"cannot read as parquet"),
        ("empty_output", r"row 1 \(id 'p1qa0'\): 'output' is empty \(expected the expected answer; an empty one scores 0, which would read as forgotten\)"),
        ("blank_input", r"row 2 \(id 'p2qa0'\): 'input' is empty \(expected the prompt\)"),
        ("id_in_both_splits", r"data: id 'p0qa0' is in forget_train and in retain_train \(an id names one row of one split\)"),
    ],
)
def test_malformed_parquet(tmp_path, case, match):
    rows = _rows()
    drop = None
    if case == "missing_column":
        drop = "output"
    elif case == "bad_id":
        rows[1]["id"] = "p1"
    elif case == "empty_split":
        rows = []
    elif case == "bad_task":
        rows[2]["task"] = "task 2"
    elif case == "wrong_split":
        rows[0]["split"] = "retain"
    elif case == "null_output":
        rows[1]["output"] = None
    elif case == "duplicate_id":
        rows[2]["id"] = rows[0]["id"]
    elif case == "empty_output":
        rows[1]["output"] = "  "
    elif case == "blank_input":
        rows[2]["input"] = "\n"
    retain = None
    if case == "id_in_both_splits":
        retain = _rows(split="retain")
        retain[1]["id"] = "p0qa0"
    if case == "empty_split":
        root = tmp_path / "data_root"
        path = root / "data" / "forget_train-00000-of-00001.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table({c: pa.array([], pa.string()) for c in ("id", "input", "output", "task", "split")}), path)
        _write_parquet(root / "data" / "retain_train-00000-of-00001.parquet", _rows(split="retain"))
    else:
        root = _organizers(tmp_path, forget=rows, retain=retain, drop=drop)
    if case == "unreadable":
        (root / "data" / "forget_train-00000-of-00001.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(AmnesiaError, match=match):
        load_semeval(root)


def test_malformed_jsonl_and_mia(tmp_path):
    root = tmp_path / "jl"
    root.mkdir()
    (root / "forget.jsonl").write_text(json.dumps(_rows()[0]) + "\n{not json\n")
    (root / "retain.jsonl").write_text(json.dumps(_rows(split="retain")[0]) + "\n")
    with pytest.raises(AmnesiaError, match=r"forget.jsonl: line 2: invalid JSON"):
        load_semeval(root)
    mia = tmp_path / "mia"
    mia.mkdir()
    (mia / "member.jsonl").write_text('{"id": "1", "text": "x"}\n')
    (mia / "nonmember.jsonl").write_text('{"id": "2", "document": "y"}\n')
    with pytest.raises(AmnesiaError, match=r"member.jsonl: line 1: missing field 'document'"):
        load_mia(mia)
    (mia / "nonmember.jsonl").unlink()
    (mia / "member.jsonl").write_text('{"id": "1", "document": "x"}\n')
    with pytest.raises(AmnesiaError, match="has member.jsonl but no nonmember.jsonl"):
        load_mia(mia)
    with pytest.raises(AmnesiaError, match="MIA folder does not exist"):
        load_mia(tmp_path / "nope")


def test_missing_and_wrong_sources(tmp_path, monkeypatch):
    with pytest.raises(AmnesiaError, match="data folder does not exist"):
        load_semeval(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AmnesiaError, match="not a SemEval data folder"):
        load_semeval(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(AmnesiaError, match="is a file"):
        load_semeval(tmp_path / "file.txt")
    only_forget = _organizers(tmp_path)
    shutil.rmtree(only_forget / "data" / "retain_train-00000-of-00001.parquet", ignore_errors=True)
    (only_forget / "data" / "retain_train-00000-of-00001.parquet").unlink()
    with pytest.raises(AmnesiaError, match="no retain_train-"):
        load_semeval(only_forget)


def test_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(AmnesiaError, match=r"some-org/some-dataset: no such data folder, and not in the local Hub cache while offline \(HF_HUB_OFFLINE=1\)"):
        load_semeval("some-org/some-dataset")
