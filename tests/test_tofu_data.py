"""The TOFU reader: the three forget splits of ../shared/data/tofu, author subsets, and one-line errors on broken copies."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import shared_path

from tracing.errors import AmnesiaError
from pipelines.tofu.data import (
    ROWS_PER_AUTHOR,
    author_index,
    author_rows,
    load_tofu,
    split_files,
    subset,
)


@pytest.fixture(scope="module")
def tofu_dir() -> Path:
    return shared_path("data", "tofu")


@pytest.fixture(scope="module")
def forget01(tofu_dir):
    return load_tofu(tofu_dir, "forget01")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize(("split", "authors"), [("forget01", 2), ("forget05", 10), ("forget10", 20)])
def test_loads_each_split(tofu_dir, split, authors):
    before = sorted(os.listdir(tofu_dir))
    data = load_tofu(str(tofu_dir), split)
    n = authors * ROWS_PER_AUTHOR
    assert data.split == split and data.source == str(tofu_dir)
    assert len(data.full) == 4000 and len(data.forget) == n and len(data.retain) == 4000 - n
    assert [r["question"] for r in data.forget] == [r["question"] for r in data.full[-n:]]
    assert data.retain == [{"question": r["question"], "answer": r["answer"]} for r in data.full[:-n]]
    assert len(data.forget_perturbed) == n and len(data.holdout) == n and len(data.retain_perturbed) == 400
    assert all(len(r["perturbed_answer"]) == 5 for r in data.forget_perturbed + data.retain_perturbed)
    assert len(data.real_authors_perturbed) == 100 and len(data.world_facts_perturbed) == 117
    assert data.forget_authors == tuple(range(200 - authors, 200)) and data.retain_authors == tuple(range(200 - authors))
    assert data.author_of(0) == 0 and data.author_of(3999) == 199
    assert sorted(os.listdir(tofu_dir)) == before  # nothing written beside the data


def test_author_helpers():
    assert author_index(0) == 0 and author_index(19) == 0 and author_index(20) == 1 and author_index(3999) == 199
    assert author_rows(198) == range(3960, 3980)
    assert split_files("forget05")["retain"] == "retain95.json" and split_files("forget10")["holdout"] == "holdout10.json"
    with pytest.raises(AmnesiaError, match="expected a row position"):
        author_index(-1)


def test_subset_keeps_forget_whole(forget01):
    small = subset(forget01, [25, 0, 3])
    assert small.authors == (0, 3, 25, 198, 199)
    assert small.retain == forget01.retain[0:20] + forget01.retain[60:80] + forget01.retain[500:520]
    assert small.retain_perturbed == forget01.retain_perturbed[0:20] + forget01.retain_perturbed[60:80]  # author 25 has none
    assert small.full == small.retain + forget01.forget
    assert small.forget == forget01.forget and small.forget_perturbed == forget01.forget_perturbed and small.holdout == forget01.holdout
    assert small.real_authors_perturbed == forget01.real_authors_perturbed
    assert small.author_of(45) == 25 and small.forget_authors == (198, 199)
    again = subset(small, [3])  # a subset of a subset keeps the numbering
    assert again.authors == (3, 198, 199) and again.retain == forget01.retain[60:80] and again.retain_perturbed == forget01.retain_perturbed[60:80]


@pytest.mark.parametrize(("authors", "message"), [
    ([199], "author 199 is in the forget set of forget01"),
    ([200], "author 200 is not a retain author"),
    ([1, 1], "repeat an author"),
    ([], "at least one retain author"),
])
def test_subset_errors(forget01, authors, message):
    with pytest.raises(AmnesiaError, match=message) as info:
        subset(forget01, authors)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- broken copies


@pytest.fixture()
def copy(tofu_dir, tmp_path) -> Path:
    """A writable copy of the files forget01 reads."""
    out = tmp_path / "tofu"
    out.mkdir()
    for name in split_files("forget01").values():
        shutil.copy(tofu_dir / name, out / name)
    return out


def _rewrite(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")


def _set_field(path: Path, lineno: int, key: str, value=None, *, drop: bool = False) -> None:
    def edit(lines):
        row = json.loads(lines[lineno - 1])
        if drop:
            del row[key]
        else:
            row[key] = value
        lines[lineno - 1] = json.dumps(row)
        return lines

    _rewrite(path, edit)


def _fails(root: str | Path, message: str, split: str = "forget01") -> str:
    with pytest.raises(AmnesiaError, match=message) as info:
        load_tofu(root, split)
    text = str(info.value)
    assert "\n" not in text, text
    return text


def test_copy_loads(copy):
    assert len(load_tofu(copy).forget) == 40


def test_missing_file(copy):
    (copy / "holdout01.json").unlink()
    _fails(copy, r"holdout01\.json: missing \(a TOFU folder holds full\.json")


def test_bad_json_line(copy):
    _rewrite(copy / "forget01_perturbed.json", lambda lines: lines[:2] + ['{"question": "broken'] + lines[3:])
    _fails(copy, r"forget01_perturbed\.json: line 3: invalid JSON")


def test_missing_field(copy):
    _set_field(copy / "retain_perturbed.json", 2, "paraphrased_answer", drop=True)
    _fails(copy, r"retain_perturbed\.json: line 2: field 'paraphrased_answer' must be a string, got missing")


def test_non_string_field(copy):
    _set_field(copy / "full.json", 7, "answer", 3)
    _fails(copy, r"full\.json: line 7: field 'answer' must be a string, got int 3")


@pytest.mark.parametrize("value", ["one wrong answer", [], ["fine", 2]])
def test_perturbed_answer_must_be_a_list_of_strings(copy, value):
    _set_field(copy / "world_facts_perturbed.json", 4, "perturbed_answer", value)
    _fails(copy, r"world_facts_perturbed\.json: line 4: field 'perturbed_answer' must be a non-empty list of strings")


def test_forget_not_the_tail_of_full(copy):
    _set_field(copy / "forget01.json", 5, "answer", "Something the target never saw.")
    text = _fails(copy, r"forget01\.json: line 5: question/answer .* differ from the last 40 rows of full\.json")
    assert "row 4" in text


def test_forget_perturbed_differs_from_forget(copy):
    _set_field(copy / "forget01_perturbed.json", 9, "question", "Who is someone else?")
    _fails(copy, r"forget01_perturbed\.json: line 9: question/answer 'Who is someone else\?' differ from forget01\.json")


def test_retain_not_full_minus_forget(copy):
    _rewrite(copy / "retain99.json", lambda lines: lines[:-1])
    _fails(copy, r"retain99\.json: 3959 rows, expected 3960 \(full\.json without its last 40 rows")


def test_holdout_size(copy):
    _rewrite(copy / "holdout01.json", lambda lines: lines[:-1])
    _fails(copy, r"holdout01\.json: 39 rows, expected 40 \(as many as forget01\.json\)")


def test_unknown_split(copy):
    _fails(copy, r"TOFU split 'forget02': expected one of forget01, forget05, forget10", split="forget02")
    _fails(copy, r"TOFU split 'retain99'", split="retain99")


def test_missing_folder_and_file_source(tmp_path, copy):
    _fails(tmp_path / "nowhere", "TOFU data folder does not exist")
    _fails(copy / "full.json", "is a file; expected a TOFU data folder")


def test_hub_id_downloads_json_files(monkeypatch, copy):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(copy)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    data = load_tofu("locuslab/TOFU", "forget01")
    assert ("locuslab/TOFU", {"repo_type": "dataset", "allow_patterns": ["*.json"]}) in calls
    assert data.source == str(copy) and len(data.holdout) == 40


def test_hub_id_errors(monkeypatch):
    import huggingface_hub

    import unlearn.hub

    def cached_only(repo_id, **kwargs):  # in the local cache, but the download itself fails
        if kwargs.get("local_files_only"):
            return "/nowhere"
        raise OSError("disk full")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached_only)
    _fails("locuslab/TOFU", r"locuslab/TOFU: not a local folder, and the Hub dataset could not be fetched \(OSError\)")

    def absent(repo_id, **kwargs):
        raise OSError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", absent)
    monkeypatch.setattr(unlearn.hub, "offline", lambda: True)
    _fails("locuslab/TOFU", r"locuslab/TOFU: no such TOFU data folder, and not in the local Hub cache while offline")
