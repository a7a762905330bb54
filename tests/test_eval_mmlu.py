"""MMLU through lm-eval: offline on 2 subjects of the local copy in ../shared, recounted from samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tracing.errors import AmnesiaError
from unlearn.eval.mmlu import BUILTIN_DIR, ENV_DIR, MMLUConfig, check_mmlu, local_subjects, resolve_source, run_mmlu, stock_subjects, stock_task_dir, write_local_tasks
from unlearn.models import ModelOptions, load_model


@pytest.fixture(scope="module")
def model_tok(fixture_target):
    return load_model(fixture_target, ModelOptions(device="cpu"))


def test_mmlu_offline_local_copy(model_tok, mmlu_dir, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as under HF_DATASETS_OFFLINE=1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model, tok = model_tok
    config = MMLUConfig(source=str(mmlu_dir), subjects=("anatomy", "philosophy"), limit=5, batch_size=8)
    result = run_mmlu(model, tok, config)
    assert result["mode"] == "local" and result["source"] == str(mmlu_dir) and result["shots"] == 0
    subjects = result["subjects"]
    assert set(subjects) == {"anatomy", "philosophy"}
    assert subjects["anatomy"]["category"] == "stem" and subjects["philosophy"]["category"] == "humanities"
    for s in subjects.values():
        assert s["total"] == 5 and s["acc"] == s["correct"] / 5
    assert result["questions"] == 10
    assert result["micro"] == (subjects["anatomy"]["correct"] + subjects["philosophy"]["correct"]) / 10
    assert result["macro"] == pytest.approx((subjects["anatomy"]["acc"] + subjects["philosophy"]["acc"]) / 2)
    assert result["categories"]["stem"]["correct"] == subjects["anatomy"]["correct"]
    assert not model.training


def test_local_task_yaml_keeps_stock_prompt(tmp_path, mmlu_dir):
    from lm_eval.tasks._yaml_loader import load_yaml

    names = write_local_tasks(mmlu_dir, ["anatomy"], tmp_path)
    assert names == ["mmlu_anatomy"]
    cfg = yaml.safe_load((tmp_path / "mmlu_anatomy.yaml").read_text())
    assert cfg["dataset_path"] == "arrow" and cfg["dataset_name"] is None
    assert cfg["dataset_kwargs"]["data_files"]["test"] == [str(mmlu_dir / "anatomy" / "test" / "data-00000-of-00001.arrow")]
    merged = load_yaml(tmp_path / "mmlu_anatomy.yaml", resolve_func=False)
    stock = load_yaml(stock_task_dir() / "mmlu_anatomy.yaml", resolve_func=False)
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "description", "test_split", "fewshot_split", "output_type"):
        assert merged[key] == stock[key], key
    assert merged["dataset_path"] == "arrow"
    assert len(stock_subjects()) == 57 and len(local_subjects(mmlu_dir)) == 57


def _offline(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as under HF_DATASETS_OFFLINE=1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_sources_and_clear_errors(tmp_path, mmlu_dir, monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    _offline(monkeypatch)
    auto = resolve_source("auto")  # no local copy, no Hub: the built-in subset, and the reason
    assert auto.mode == "builtin" and auto.path == BUILTIN_DIR and "not reachable" in auto.why
    assert resolve_source("off").mode == "off" and resolve_source("hub").mode == "hub" and resolve_source("builtin").mode == "builtin"
    monkeypatch.setenv(ENV_DIR, str(mmlu_dir))
    assert resolve_source("auto").path == Path(mmlu_dir)
    with pytest.raises(AmnesiaError, match=r"MMLU folder does not exist; pass --mmlu DIR .* set AMNESIA_MMLU_DIR, or skip MMLU with --mmlu off"):
        resolve_source(str(tmp_path / "missing"))
    with pytest.raises(AmnesiaError, match="no MMLU subjects"):
        resolve_source(str(tmp_path))
    with pytest.raises(AmnesiaError, match="unknown subject 'anatomyy'"):
        check_mmlu(MMLUConfig(source=str(mmlu_dir), subjects=("anatomyy",)))
    with pytest.raises(AmnesiaError, match="--mmlu-shots 6: expected 0 to 5"):
        check_mmlu(MMLUConfig(source="off", shots=6))


def test_builtin_subset_is_the_first_test_questions_of_each_subject(model_tok, mmlu_dir, monkeypatch):
    import datasets

    _offline(monkeypatch)
    assert local_subjects(BUILTIN_DIR) == local_subjects(mmlu_dir) and len(local_subjects(BUILTIN_DIR)) == 57
    size = sum(p.stat().st_size for p in BUILTIN_DIR.rglob("*") if p.is_file())
    assert size < 1_000_000  # the budget for package data
    for subject in ("anatomy", "world_religions"):
        ours = datasets.Dataset.from_file(str(next((BUILTIN_DIR / subject / "test").glob("*.arrow"))))
        full = datasets.Dataset.from_file(str(next((mmlu_dir / subject / "test").glob("*.arrow"))))
        assert len(ours) == 5 and ours.to_list() == full.select(range(5)).to_list()
        dev = datasets.Dataset.from_file(str(next((BUILTIN_DIR / subject / "dev").glob("*.arrow"))))
        assert dev.to_list() == datasets.Dataset.from_file(str(next((mmlu_dir / subject / "dev").glob("*.arrow")))).to_list()
    model, tok = model_tok
    result = run_mmlu(model, tok, MMLUConfig(source="builtin", subjects=("anatomy",), batch_size=8))
    assert result["mode"] == "builtin" and result["questions"] == 5 and result["source"].startswith("builtin subset")


def test_hub_unreachable_is_one_clear_error(model_tok, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model, tok = model_tok
    with pytest.raises(AmnesiaError) as err:
        run_mmlu(model, tok, MMLUConfig(source="hub", subjects=("anatomy",), limit=1, batch_size=1))
    message = str(err.value)
    assert "\n" not in message and "could not load their data from the Hub" in message and "--mmlu DIR" in message


def test_mmlu_prints_no_library_noise(model_tok, tmp_path, monkeypatch, capfd):
    """Outside a git checkout and with a fresh datasets cache: no "fatal: not a git repository"
    (lm-eval's git describe) and no "Generating test split" bar per subject file (datasets)."""
    import datasets

    _offline(monkeypatch)
    monkeypatch.chdir(tmp_path)  # not a git checkout
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    model, tok = model_tok
    capfd.readouterr()
    result = run_mmlu(model, tok, MMLUConfig(source="builtin", subjects=("anatomy", "astronomy"), limit=2, batch_size=4))
    out, err = capfd.readouterr()
    assert result["questions"] == 4
    assert "not a git repository" not in err
    assert "Generating" not in out + err, (out + err)[-500:]
    assert "2/2" not in err  # no bar per task while lm-eval builds its requests
    assert "Running loglikelihood requests" in err  # the one bar that says how far it is
    assert datasets.is_progress_bar_enabled()  # switched back on afterwards
    quiet = run_mmlu(model, tok, MMLUConfig(source="builtin", subjects=("anatomy",), limit=2, batch_size=4), progress=False)
    out, err = capfd.readouterr()
    assert quiet["questions"] == 2 and "it/s" not in out + err, (out + err)[-500:]  # progress off: no bar at all
    import lm_eval.api.task

    assert lm_eval.api.task.tqdm.__module__.startswith("tqdm")  # restored
