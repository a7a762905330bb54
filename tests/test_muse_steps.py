"""MUSE's C5 scalability and C6 sustainability (pipelines.muse.folds): the folds, each step's
request, the rows requested so far, MUSE's own scal/sust files and the settings (the steps of a
reduced run: tests/test_muse_pipeline.py, on its reduced run)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from conftest import shared_path
from pipelines.muse.data import load_muse
from pipelines.muse.folds import cut, file_fold_rows, fold_rows, requested_scores, step_rows
from pipelines.muse.mini import build_mini
from pipelines.muse.pipeline import MuseSection, mini_rows, muse_config_from_mapping, request_rows, write_request
from test_muse_pipeline import _mapping
from tracing.errors import AmnesiaError
from unlearn.data import load_semeval


@pytest.fixture(scope="module")
def muse_dir():
    return shared_path("data", "muse_news")


def _ids(rows):
    return [r["id"] for r in rows]


def test_cut_keeps_order_and_sizes_differ_by_at_most_one():
    assert cut(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert cut([1, 2], 3) == [[1], [2], []]
    assert sum(cut(list(range(10)), 4), []) == list(range(10))


def test_folds_cut_each_kind_and_steps_grow_or_follow(muse_dir):
    mini = build_mini(load_muse(muse_dir), forget_docs=8, prompt_words=10, continuation_words=20, qa=8, icl_examples=2)
    section = MuseSection(forget_docs=8, prompt_words=10, continuation_words=20, qa=8)
    train = request_rows(mini_rows(mini, section), section)["forget"]["train"]  # 6 documents, 6 questions
    folds = fold_rows(train, 3)
    assert [_ids(f) for f in folds] == [["muse-forget-doc000sc0", "muse-forget-doc001sc0", "muse-forget-q000qa0", "muse-forget-q001qa0"],
                                        ["muse-forget-doc002sc0", "muse-forget-doc004sc0", "muse-forget-q002qa0", "muse-forget-q004qa0"],
                                        ["muse-forget-doc005sc0", "muse-forget-doc006sc0", "muse-forget-q005qa0", "muse-forget-q006qa0"]]
    assert sorted(sum((_ids(f) for f in folds), [])) == sorted(_ids(train))  # disjoint, and every training row once
    scal, sust = step_rows("scal", folds), step_rows("sust", folds)
    assert [len(s) for s in scal] == [4, 8, 12] and _ids(scal[-1]) == _ids(train)  # the whole request, in its order
    assert sust == folds
    with pytest.raises(AmnesiaError, match="muse.folds 7: the request has 6 forget training documents; expected at least one per fold"):
        fold_rows(train, 7)


def test_a_step_s_request_holds_its_rows_and_the_run_s_validation(muse_dir, tmp_path):
    mini = build_mini(load_muse(muse_dir), forget_docs=8, prompt_words=10, continuation_words=20, qa=8, icl_examples=2)
    section = MuseSection(forget_docs=8, prompt_words=10, continuation_words=20, qa=8)
    rows = mini_rows(mini, section)
    full = request_rows(rows, section)
    fold = fold_rows(full["forget"]["train"], 3)[1]
    manifest = write_request(rows, tmp_path / "step", section, "x", forget_train=fold)
    data = load_semeval(tmp_path / "step")
    assert _ids(data.get("forget", "train")) == _ids(fold)
    assert _ids(data.get("forget", "validation")) == _ids(full["forget"]["validation"])
    assert _ids(data.get("retain", "train")) == _ids(full["retain"]["train"])
    # the validation members: this step's documents and the validation documents, not the rest of the forget set
    docs = [r["input"] + r["output"] for r in fold + full["forget"]["validation"] if r["id"].endswith("sc0")]
    assert list(data.mia_validation["member"]["document"]) == docs and len(docs) == 2 + 2
    assert list(data.mia_validation["nonmember"]["document"]) == mini.reference_docs
    assert manifest["documents"]["members"] == 4 and not (tmp_path / "step" / "muse").exists()


def test_requested_scores_read_the_rows_requested_so_far(tmp_path):
    path = tmp_path / "predictions.csv"
    rows = [("verbmem", 0, 0.5), ("verbmem", 1, 1.0), ("verbmem", 2, 0.0), ("knowmem_forget", 0, 0.2), ("knowmem_forget", 2, 0.6), ("knowmem_retain", 0, 1.0)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["set", "index", "rouge_l_f1"])
        w.writeheader()
        w.writerows({"set": s, "index": i, "rouge_l_f1": v} for s, i, v in rows)
    train = ["muse-forget-doc000sc0", "muse-forget-doc002sc0", "muse-forget-q000qa0", "muse-forget-q002qa0"]
    got = requested_scores(path, ["muse-forget-doc000sc0", "muse-forget-q000qa0"], train)
    assert got == pytest.approx({"verbmem_requested": 50.0, "knowmem_requested": 20.0, "verbmem_not_requested": 0.0, "knowmem_not_requested": 60.0})
    everything = requested_scores(path, train, train)
    assert everything["verbmem_requested"] == pytest.approx(25.0) and everything["verbmem_not_requested"] is None
    assert requested_scores(path, ["muse-forget-scal1-doc000sc0"], [])["verbmem_requested"] is None  # MUSE's own sets: no VerbMem row


def test_muse_s_own_scal_and_sust_files(muse_dir, tmp_path):
    folder = Path(shutil.copytree(muse_dir, tmp_path / "muse"))
    articles = [" ".join(f"w{i}" for i in range(30)), " ".join(f"v{i}" for i in range(12))]
    for k, texts in enumerate(([articles[0]], articles), 1):
        (folder / "scal").mkdir(exist_ok=True)
        (folder / "scal" / f"forget_{k}.json").write_text(json.dumps(texts))
    data = load_muse(folder)
    assert data.scal == [[articles[0]], articles] and data.sust is None
    section = MuseSection(mini=False, prompt_words=4, chunk_words=10)
    steps = step_rows("scal", file_fold_rows(data.scal, "scal", section, "Task1"), given=True)
    assert [len(s) for s in steps] == [3, 4]  # 30 words in chunks of 10; then those and 12 words (a chunk of 2 has no output: dropped)
    assert steps[0][0]["id"] == "muse-forget-scal1-doc000sc0" and steps[0][0]["input"] == "w0 w1 w2 w3" and steps[0][0]["output"].split() == [f"w{i}" for i in range(4, 10)]
    (folder / "sust").mkdir()
    (folder / "sust" / "forget_2.json").write_text(json.dumps(articles))
    with pytest.raises(AmnesiaError, match=r"sust: no forget_1.json \(expected MUSE's sust forget sets numbered forget_1.json"):
        load_muse(folder)
    (folder / "sust" / "forget_1.json").write_text(json.dumps([]))
    with pytest.raises(AmnesiaError, match=r"sust/forget_1.json: expected a non-empty JSON list of article texts"):
        load_muse(folder)


def test_step_settings_are_checked(muse_dir, tmp_path):
    with pytest.raises(AmnesiaError, match=r"muse.folds 1: expected an integer >= 2"):
        muse_config_from_mapping({**_mapping(muse_dir, tmp_path), "muse": {"folds": 1}})
    with pytest.raises(AmnesiaError, match=r"muse.folds 4: the CPU-sized run has 3 forget training documents \(muse.forget_docs 4, every 4th validating\)"):
        muse_config_from_mapping({**_mapping(muse_dir, tmp_path), "muse": {"forget_docs": 4, "qa": 4, "scalability": True}})
    assert muse_config_from_mapping({**_mapping(muse_dir, tmp_path), "muse": {"forget_docs": 4, "qa": 4, "folds": 3, "sustainability": True}}).muse.sustainability
