"""Every shipped YAML config validates into its benchmark's run config (or, for unlearning-only files, an UnlearnConfig)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts and p.name != "unlearn_paper_olmo.yaml")


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_run_configs_validate(path):
    config = load_config(path)
    assert config.name
    # no shipped run config sets a learning rate or a number of epochs: the step size is measured (docs/step-size.md)
    assert config.unlearn.lr == "auto" and config.unlearn.epochs == "auto", path
    assert "lr:" not in path.read_text(encoding="utf-8").split("unlearn:", 1)[-1].split("\nevaluate:", 1)[0].replace("lr_scheduler:", "")
    if path.name.startswith("semeval_"):
        assert config.unlearn.batch_size == 12 and config.unlearn.grad_accum == 10
        assert config.unlearn.bf16 and config.trace.select_k == 6
        assert config.model.startswith("llmunlearningsemeval2025organization/") and config.data.endswith("semeval25-unlearning-dataset-public")


@pytest.mark.parametrize("path", RUN_CONFIGS + [ROOT / "pipelines" / "demo.yaml"], ids=lambda p: str(p.relative_to(ROOT)))
def test_a_resolved_config_runs_again(path, tmp_path):
    """What a run writes as config.resolved.yaml loads into the same config (`amnesia run runs/x/config.resolved.yaml`
    reproduces a run): the stages' copies of top-level settings are not written back."""
    from pipelines.config import dump_config

    config = load_config(path, ["unlearn.seed=3"])
    resolved = tmp_path / "config.resolved.yaml"
    resolved.write_text(dump_config(config))
    again = load_config(resolved)
    assert again.to_dict() == config.to_dict() and again.unlearn.seed == 3


def test_a_baseline_is_the_same_config_with_another_method():
    """No copied baseline files: the shipped config with unlearn.method overridden (or --control methods)."""
    base = load_config(ROOT / "configs" / "semeval_olmo1b.yaml")
    for method in ("ga", "gd", "kl", "npo"):
        config = load_config(ROOT / "configs" / "semeval_olmo1b.yaml", [f"unlearn.method={method}", f"name={method}_olmo1b"])
        assert config.unlearn.method == method and config.trace == base.trace and config.evaluate == base.evaluate


def test_paper_unlearning_config():
    from unlearn.config import UnlearnConfig

    cfg = UnlearnConfig.from_yaml(ROOT / "configs" / "unlearn_paper_olmo.yaml")
    assert cfg.layers == "0-5" and cfg.kind == "mlp" and cfg.lr == 1.5e-5 and cfg.epochs == 8


@pytest.mark.parametrize("name, message", [
    ("..", "name '..': expected a non-empty folder name without '/', '\\' and other than '.' or '..'"),
    ("a/b", "name 'a/b': expected a non-empty folder name"),
    ("x" * 256, "256 bytes, too long for a folder name (expected at most 200)"),
])
def test_run_names_that_are_not_one_folder_are_refused_before_anything_is_written(name, message, tmp_path, monkeypatch):
    from tracing.errors import AmnesiaError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(AmnesiaError, match=re.escape(message)):
        load_config(ROOT / "configs" / "demo.yaml", [f"name={name}"])
    assert list(tmp_path.iterdir()) == []
