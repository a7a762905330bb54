"""The plug-in claim: a method defined here, in a test file, runs through `amnesia unlearn --method`
and `--control methods`, and a benchmark defined here through `amnesia run`, with no edit anywhere else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from pipelines.benchmarks import Benchmark, benchmark_names, register_benchmark, unregister_benchmark
from pipelines.config import RunSections, config_from_mapping
from pipelines.run import Pipeline, run_pipeline
from pipelines.semeval.config import semeval_config_from_mapping
from tracing.errors import AmnesiaError
from tracing.io import write_json
from unlearn.config import ModelOptions, UnlearnConfig
from unlearn.methods import Method, get_method, method_names, register, unregister

from test_pipeline import small_config


@dataclass(frozen=True)
class ScaledAscentSettings:
    scale: float = field(default=0.5, metadata={"help": "weight of the forget term"})

    def check(self) -> None:
        if not self.scale > 0:
            raise AmnesiaError(f"scale {self.scale}: expected a positive weight")


class ScaledAscent(Method):
    """A toy: ``−scale·CE_f + CE_r``, logging the weighted forget term."""

    name = "toy"
    summary = "a test's toy: −scale·CE_f + CE_r"
    Settings = ScaledAscentSettings
    logs = {"toy_forget": "tf"}

    def loss(self, batch):
        forget = self.settings.scale * batch.ce_forget
        return -forget + batch.ce_retain, {"toy_forget": forget.item()}


@pytest.fixture
def toy():
    register(ScaledAscent)
    yield ScaledAscent
    unregister("toy")


def test_registry_names_settings_and_typos(toy):
    assert method_names() == ("sha256", "ga", "gd", "kl", "npo", "simnpo", "wga", "satimp", "ceu", "undial", "pdu", "rmu", "idkdpo", "toy")
    assert get_method("toy") is toy
    assert UnlearnConfig(method="toy", method_args={"scale": 0.25}).check() is None
    with pytest.raises(AmnesiaError, match=r"^method 'tyo': unknown \(did you mean toy\?\); expected one of sha256, ga, gd, kl, npo, simnpo, wga, satimp, ceu, undial, pdu, rmu, idkdpo, toy$"):
        UnlearnConfig(method="tyo").check()
    with pytest.raises(AmnesiaError, match=r"^method_args 'scael': method toy has no such setting \(did you mean scale\?\); its settings: scale$"):
        UnlearnConfig(method="toy", method_args={"scael": 1}).check()
    with pytest.raises(AmnesiaError, match=r"^scale -1.0: expected a positive weight$"):
        UnlearnConfig(method="toy", method_args={"scale": "-1"}).check()
    with pytest.raises(AmnesiaError, match=r"^method_args scale 'big': expected a float$"):
        UnlearnConfig(method="toy", method_args={"scale": "big"}).check()
    with pytest.raises(AmnesiaError, match=r"method npo takes its settings from npo_beta"):
        UnlearnConfig(method="npo", method_args={"beta": 1}).check()


def test_a_plugin_method_through_amnesia_unlearn(toy, fixture_world, fixture_target, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "toy"
    args = ["unlearn", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--layers", "0-1", "--max-steps", "2",
            "--batch-size", "8", "--grad-accum", "1", "--lr", "1e-3", "--max-length", "128", "--quiet", "--device", "cpu",
            "--method", "toy", "--method-arg", "scale=0.25", "--logging-steps", "1"]
    assert main(args) == 0
    written = json.loads((out / "unlearn.json").read_text())
    assert written["method"] == "toy" and written["hyperparameters"]["method_args"] == {"scale": 0.25}
    logged = [h for h in written["log_history"] if "toy_forget" in h]
    assert len(logged) == 2 and all(h["toy_forget"] == pytest.approx(0.25 * h["ce_forget"], rel=1e-5) for h in logged)
    assert written["per_epoch"][0]["toy_forget"] > 0
    capsys.readouterr()
    assert main(args[:-6] + ["--method", "toy", "--method-arg", "scale", "--overwrite"]) == 2
    assert capsys.readouterr().err.strip() == "amnesia unlearn: error: --method-arg 'scale': expected KEY=VALUE (a field of the method's Settings)"


def test_control_methods_runs_every_registered_method_in_one_table(toy, tmp_path, fixture_world, fixture_target):
    extra = {
        "control": "methods", "retrace": False,
        "unlearn": {"layers": "auto", "kind": "mlp", "lr": 1e-3, "max_steps": 2, "batch_size": 8, "grad_accum": 1, "max_length": 128, "seed": 0,
                    "eval_steps": 1, "eval_rows": 4},
        "evaluate": {"splits": "train", "mmlu": "builtin", "mmlu_subjects": ["anatomy"], "mmlu_limit": 2, "max_new_tokens": 16, "limit": 6},
    }
    config = semeval_config_from_mapping(small_config(fixture_world, fixture_target, tmp_path / "run", **extra))
    outcome = run_pipeline(config, progress=False, log=lambda m: None)
    controls = json.loads((outcome.run_dir / "summary.json").read_text())["controls"]
    rows = controls["rows"]
    assert [r["label"] for r in rows] == ["sha256 (default)", *[m for m in method_names() if m != "sha256"]]
    assert [r["method"] for r in rows] == list(method_names()) and "toy" in method_names()
    assert all(r["layers"] == rows[0]["layers"] and r["kept_step"] in (1, 2) for r in rows)  # same layers, same selection rule
    best = max(rows, key=lambda r: r["aggregate"])
    assert controls["best"] == best["label"] and [r["best"] for r in rows].count(True) == 1
    md = (outcome.run_dir / "report.md").read_text()
    assert "## Controls (methods)" in md and f"**{best['label']}**" in md
    assert all(r["lr"] == 1e-3 and r["arrive_displacement"] is None for r in rows)  # a given rate: nothing probed
    assert "| lr | displacement to forget | kept step | wall time (s) | peak memory (MB) |" in md and "| 0.001 | – |" in md
    assert all(r["wall_time_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows)  # each run's own time and memory, in one table
    for r in rows:
        unlearn = json.loads((outcome.run_dir / ("unlearned" if r["method"] == "sha256" else f"control_{r['method']}") / "unlearn.json").read_text())
        assert unlearn["method"] == r["method"] and unlearn["validation"]["eval_steps"] == 1




# --------------------------------------------------------------------------- a benchmark defined here


@dataclass(frozen=True)
class ToyRunConfig(RunSections):
    """The toy benchmark's run config: the shared sections (data, model, trace, unlearn, …), its own name and defaults."""

    name: str = "toy"
    benchmark: str = "toyqa"
    retrace: bool = False

    def check(self) -> None:
        if self.data is None or self.model is None:
            raise AmnesiaError("the toy benchmark needs 'data' and 'model'")
        super().check()


def forget_exact_match(model_path: str, data: str, loading: ModelOptions, rows: int = 8) -> float:
    """The toy's metric: greedy exact match on the first forget QA rows."""
    from unlearn.data import load_semeval
    from unlearn.generation import GenerationOptions, generate
    from unlearn.models import load_model

    model, tok = load_model(model_path, loading)
    forget = [r for r in load_semeval(data).get("forget", "train") if r["id"].endswith("qa0")][:rows]
    texts = generate(model, tok, [r["input"] for r in forget], GenerationOptions(max_new_tokens=16)).texts
    return sum(t.strip().startswith(r["output"].strip()) for t, r in zip(texts, forget)) / len(forget)


class ToyPipeline(Pipeline):
    """The shared stages; the toy's scores (one cached stage per model) and its summary."""

    def evaluate(self, name, model_path, model_key, data, data_key):
        return self.run.stage(name, {"rows": 8}, lambda tmp: {"forget_em": forget_exact_match(model_path, data, self.config.loading)},
                              inputs=[model_key, data_key])

    def report(self, run_dir, *, trace, retrace, unlearned, scores, controls, wall_time):
        summary = {"benchmark": "toyqa", "layers": unlearned.record["layers"], **{f"forget_em_{label}": s.record["forget_em"] for label, s in scores.items()}}
        write_json(run_dir / "summary.json", summary)
        return summary


def toy_headline(summary: dict, run_dir) -> None:
    print(f"toy forget exact match {summary['forget_em_target']:.2f} -> {summary['forget_em_unlearned']:.2f} (layers {summary['layers']})")


@pytest.fixture
def toy_benchmark():
    benchmark = register_benchmark(Benchmark(name="toyqa", summary="a test's toy", run=ToyPipeline.execute, headline=toy_headline,
                                             config_from_mapping=lambda data, where: config_from_mapping(data, where, ToyRunConfig)))
    yield benchmark
    unregister_benchmark("toyqa")


def test_a_plugin_benchmark_through_amnesia_run(toy_benchmark, fixture_world, fixture_target, tmp_path, capsys):
    from pipelines.cli import main

    path = tmp_path / "toy.yaml"
    path.write_text(json.dumps({
        "benchmark": "toyqa", "data": str(fixture_world), "model": str(fixture_target), "out": str(tmp_path / "run"), "loading": {"device": "cpu"},
        "trace": {"kinds": ["mlp"], "samples": 3, "window": 2, "max_facts": 12, "select_k": 2, "select_evidence": False, "heatmaps": 0},
        "unlearn": {"layers": "auto", "kind": "mlp", "lr": 5e-3, "max_steps": 6, "batch_size": 8, "grad_accum": 1, "max_length": 128},
    }))
    assert benchmark_names() == ("semeval", "tofu", "muse", "toyqa")
    assert main(["run", str(path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["forget_em_target"] >= 0.75 and summary["forget_em_unlearned"] < summary["forget_em_target"]  # the fixture memorised them; 6 steps at 5e-3 move it (1e-3 did on one CPU, not on another)
    for stage in ("trace/layers.json", "unlearned/unlearn.json", "scores_target/stage.json", "scores_unlearned/stage.json", "config.resolved.yaml"):
        assert (tmp_path / "run" / stage).is_file()
    assert f"toy forget exact match {summary['forget_em_target']:.2f} -> {summary['forget_em_unlearned']:.2f}" in capsys.readouterr().out
    path.write_text(json.dumps({"benchmark": "toyq", "data": str(fixture_world)}))
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"amnesia run: error: {path}: benchmark 'toyq': unknown (did you mean toyqa?); expected one of semeval, tofu, muse, toyqa"
    # the toy has no audit: asking for one is a one-line error, and nothing is written
    path.write_text(json.dumps({"benchmark": "toyqa", "data": str(fixture_world), "model": str(fixture_target), "out": str(tmp_path / "audited"),
                                "audit": {"enabled": True}}))
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip() == ("amnesia run: error: audit.enabled: benchmark 'toyqa' has no audit (SemEval, TOFU and MUSE have one); "
                                               "set audit.enabled: false")
    assert not (tmp_path / "audited").exists()
