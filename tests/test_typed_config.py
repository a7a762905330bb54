"""Typed configs from YAML and dotted overrides; cached stages in a run directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pipelines.stages import RunDir
from pipelines.typed import apply_overrides, from_mapping, parse_override, to_mapping
from tracing.settings import load_yaml_text
from tracing.errors import AmnesiaError


@dataclass
class Inner:
    lr: float = 1.5e-5
    layers: list[int] = field(default_factory=lambda: [0, 1])
    method: Literal["sha256", "ga"] = "sha256"

    def check(self):
        if self.lr <= 0:
            raise AmnesiaError(f"lr {self.lr}: expected a positive number")


@dataclass
class Outer:
    name: str = "x"
    steps: int = 3
    model: str | None = None
    inner: Inner = field(default_factory=Inner)
    flag: bool = False


def test_from_mapping_types_and_nesting():
    cfg = from_mapping(Outer, load_yaml_text("name: run\ninner:\n  lr: 1e-4\n  layers: [2, 3]\nflag: true\n", "c.yaml"), "c.yaml")
    assert cfg.inner.lr == pytest.approx(1e-4) and cfg.inner.layers == [2, 3] and cfg.flag is True and cfg.model is None
    assert to_mapping(cfg)["inner"] == {"lr": 1e-4, "layers": [2, 3], "method": "sha256"}
    assert from_mapping(Outer, {"inner": {"lr": 2}}).inner.lr == 2.0  # ints are numbers


@pytest.mark.parametrize(
    "data, match",
    [
        ({"stpes": 3}, r"c.yaml: unknown key 'stpes' \(did you mean 'steps'\?\); valid keys: name, steps, model, inner, flag"),
        ({"inner": {"lrr": 1}}, r"c.yaml.inner: unknown key 'lrr'"),
        ({"steps": "three"}, r"c.yaml.steps: expected an integer, got 'three'"),
        ({"steps": 2.5}, r"c.yaml.steps: expected an integer, got 2.5"),
        ({"flag": "yes please"}, r"c.yaml.flag: expected true or false"),
        ({"inner": {"method": "npo"}}, r"c.yaml.inner.method: expected one of 'sha256', 'ga', got 'npo'"),
        ({"inner": {"layers": [1, "a"]}}, r"c.yaml.inner.layers\[1\]: expected an integer"),
        ({"inner": {"lr": -1}}, r"c.yaml.inner: lr -1.0: expected a positive number"),
        ({"inner": 5}, r"c.yaml.inner: expected a mapping"),
        ({"model": 3}, r"c.yaml.model: expected str or null, got 3"),
    ],
)
def test_from_mapping_errors(data, match):
    with pytest.raises(AmnesiaError, match=match):
        from_mapping(Outer, data, "c.yaml")


def test_overrides():
    assert parse_override("unlearn.lr=1e-5") == (["unlearn", "lr"], 1e-5)
    assert parse_override("trace.select_k=4") == (["trace", "select_k"], 4)
    data = apply_overrides({"inner": {"lr": 1.0}}, ["inner.lr=2e-3", "inner.layers=[4,5]", "name=abc"])
    assert data == {"inner": {"lr": 2e-3, "layers": [4, 5]}, "name": "abc"}
    with pytest.raises(AmnesiaError, match="expected dotted key=value"):
        parse_override("nokey")
    with pytest.raises(AmnesiaError, match="'name' is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])
    with pytest.raises(AmnesiaError, match=r"c.yaml: line \d invalid YAML"):
        load_yaml_text("a: 1\nb: [1, 2\nc: 3", "c.yaml")
    with pytest.raises(AmnesiaError, match=r"^d.yaml: line 4 invalid YAML \(key 'lr' is given twice \(lines 2 and 4\); keep one\)$"):
        load_yaml_text("unlearn:\n  lr: 1.0e-3\n  seed: 0\n  lr: 2.0e-3\n", "d.yaml")  # PyYAML alone keeps the last without a word
    assert load_yaml_text("a: {lr: 1}\nb: {lr: 2}\n", "e.yaml") == {"a": {"lr": 1}, "b": {"lr": 2}}  # one key in two mappings is fine


def test_stage_caching_force_and_interruption(tmp_path):
    calls = []

    def stage(tmp):
        calls.append(1)
        (tmp / "out.txt").write_text("done")
        return {"value": len(calls)}

    run = RunDir(tmp_path / "run", log=lambda m: None)
    first = run.stage("a", {"k": 1}, stage)
    assert not first.skipped and first.record == {"value": 1} and (tmp_path / "run" / "a" / "out.txt").read_text() == "done"
    again = RunDir(tmp_path / "run", log=lambda m: None).stage("a", {"k": 1}, stage)
    assert again.skipped and again.record == {"value": 1} and len(calls) == 1
    changed = RunDir(tmp_path / "run", log=lambda m: None).stage("a", {"k": 2}, stage)
    assert not changed.skipped and len(calls) == 2
    forced = RunDir(tmp_path / "run", force=True, log=lambda m: None).stage("a", {"k": 2}, stage)
    assert not forced.skipped and len(calls) == 3
    marker = json.loads((tmp_path / "run" / "a" / "stage.json").read_text())
    assert marker["record"] == {"value": 3} and marker["config"] == {"k": 2}

    def crash(tmp):
        (tmp / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        RunDir(tmp_path / "run", log=lambda m: None).stage("b", {}, crash)
    assert not (tmp_path / "run" / "b").exists()  # nothing a later run could take as complete
    redo = RunDir(tmp_path / "run", log=lambda m: None).stage("b", {}, stage)
    assert not redo.skipped and not list((tmp_path / "run").glob(".tmp-*"))
