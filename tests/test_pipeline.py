"""`amnesia run` end to end on the fixture, stage caching, overrides, config errors, the demo's wiring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import load_config
from pipelines.semeval.config import semeval_config_from_mapping as config_from_mapping
from pipelines.demo import demo_config, demo_mapping, resolve_mmlu
from pipelines.run import control_layer_sets, run_pipeline
from tracing.settings import load_yaml_text
from tracing.errors import AmnesiaError

ROOT = Path(__file__).resolve().parents[1]


def small_config(world: Path, target: Path, out: Path, **extra) -> dict:
    return {
        "name": "fixture",
        "out": str(out),
        "data": str(world),
        "model": str(target),
        "loading": {"device": "cpu"},
        # the demo's tracing (32 facts, 5 samples): fewer facts select a window from noise, and the quality bars below assume a traced one
        "trace": {"kinds": ["mlp"], "samples": 5, "window": 2, "max_facts": 32, "select_k": 2, "select_evidence": False, "heatmaps": 1},
        "unlearn": {"layers": "auto", "kind": "mlp", "batch_size": 8, "grad_accum": 1, "max_length": 128, "logging_steps": 4, "seed": 0,
                    "eval_steps": 15, "patience": 4},  # the demo's recipe: lr and epochs auto
        "evaluate": {"splits": "train", "mmlu": "off", "max_new_tokens": 48},
        **extra,
    }


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory, fixture_world, fixture_target):
    out = tmp_path_factory.mktemp("run") / "run"
    config = config_from_mapping(small_config(fixture_world, fixture_target, out))
    outcome = run_pipeline(config, progress=False, log=lambda m: None)
    return config, outcome


def test_run_end_to_end(fixture_run):
    config, outcome = fixture_run
    run_dir = outcome.run_dir
    for name in ("trace", "unlearned", "retrace", "scores_before", "scores_after", "report.md", "report.html", "summary.json", "config.resolved.yaml"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    before, after = summary["scores_before"], summary["scores_after"]
    fk_b, fk_a = before["forget-set"]["overall-knowledge-score"], after["forget-set"]["overall-knowledge-score"]
    rk_b, rk_a = before["retain-set"]["overall-knowledge-score"], after["retain-set"]["overall-knowledge-score"]
    assert fk_b >= 0.9 and fk_a <= fk_b - 0.5, (fk_b, fk_a)  # the forget set's facts are gone
    # the retain set holds: one run on the fixture, no seed average (0.79× on an Intel Xeon sandbox, ≥ 0.8× on an AMD EPYC;
    # the demo's seeds keep 0.90–0.99×, docs/step-size.md) — this guards against a collapse, not a quality claim
    assert rk_a >= 0.75 * rk_b, (rk_b, rk_a)
    assert summary["unlearn"]["layers"] == summary["selection"]["layers"] and len(summary["selection"]["layers"]) == 2
    r = summary["retrace"]
    assert len(r["aie_before"]) == len(r["aie_after"]) == 6
    assert r["p_clean"]["mean"] < summary["trace"]["p_clean"]["mean"]  # the unlearned model no longer predicts them
    md = (run_dir / "report.md").read_text()
    for heading in ("## Facts", "## Where the facts live", "## Before and after", "## Unlearning", "## Scores", "## Wall time"):
        assert heading in md
    assert "overall-knowledge-score" in md and "MMLU before: skipped" in md
    assert "-0.000" not in md
    # every requested heatmap, beside its re-trace, under a name with nothing of the fact's text in it
    [png] = sorted((run_dir / "trace" / "heatmaps").glob("*.png"))
    assert (run_dir / "retrace" / "heatmaps" / png.name).is_file()
    trace_json = json.loads((run_dir / "trace" / "trace.json").read_text())
    fact = trace_json["facts"][0]
    assert png.name == f"000_{fact['id']}.png" and fact["subject"].split()[0] not in png.name and fact["answer"].strip() not in png.name
    assert f"(trace/heatmaps/{png.name})" in md and f"(retrace/heatmaps/{png.name})" in md
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "<table>" in html  # aie, 2 heatmaps, comparison, training
    for png in ("figures/trace_compare.png", "figures/training_curves.png", "trace/aie.png"):
        assert (run_dir / png).stat().st_size > 1000
    assert yaml.safe_load((run_dir / "config.resolved.yaml").read_text())["unlearn"]["lr"] == "auto"
    # the step size was measured, and the report and the summary say what it was and whether the rows arrived
    plan = summary["unlearn"]["step_size"]
    assert plan["lr_source"] == "auto" and plan["epochs_source"] == "auto" and 1e-5 < plan["lr"] < 1e-1 and len(plan["probes"]) >= 2
    assert "**Step size.** Learning rate" in md and "| probe lr |" in md and f"auto → {plan['lr']:.3g}" in md
    # the forget rows went past the never-seen level the run started from (the level itself rises as the
    # unlearning makes every biography less likely, and the verdict's validation AUC reads 6 members: test_step_size)
    outcome = summary["unlearn"]["outcome"]
    assert outcome["verdict"] != "not_moved" and outcome["forget_nll_after"] > outcome["level_before"], outcome


def test_rerun_skips_and_force_reruns(fixture_run, fixture_world, fixture_target):
    config, outcome = fixture_run
    logs: list[str] = []
    again = run_pipeline(config, progress=False, log=logs.append)
    assert all(r.skipped for r in again.stages.values()), logs
    wall = (again.run_dir / "report.md").read_text().split("## Wall time", 1)[1]
    assert "| trace | reused (cached) |" in wall and "computing every stage took" in wall and "were reused from an earlier run" in wall
    assert any("unchanged since last run: skipped" in m for m in logs)
    # a changed evaluation setting reruns only the scoring stages
    changed = config_from_mapping(small_config(fixture_world, fixture_target, outcome.run_dir, evaluate={"splits": "train", "mmlu": "off", "max_new_tokens": 40}))
    part = run_pipeline(changed, progress=False, log=lambda m: None)
    assert {n for n, r in part.stages.items() if not r.skipped} == {"scores_before", "scores_after"}


def test_audit_stage(fixture_run, fixture_world, fixture_target, tmp_path):
    """`audit.enabled` on a copy of the fixture run: only the audit stage runs; audit/audit.json,
    summary.json's `audit` with `recovery`, the report's section and the figures; cached on a rerun.
    Its never-seen model (`audit.retain_model`) is the unlearned model itself: every attack does to it
    what it does to the unlearned one, so nothing counts as recovered above that floor."""
    import shutil

    config, outcome = fixture_run
    run_dir = tmp_path / "run"
    shutil.copytree(outcome.run_dir, run_dir)
    audited = config_from_mapping(small_config(fixture_world, fixture_target, run_dir,
                                               audit={"enabled": True, "attacks": ["int4", "relearn_forget"], "relearn_steps": 4,
                                                      "retain_model": str(run_dir / "unlearned")}))
    done = run_pipeline(audited, progress=False, log=lambda m: None)
    computed = {n for n, r in done.stages.items() if not r.skipped}  # (the scores too when an earlier test changed their settings in place)
    assert "audit" in computed and computed <= {"audit", "scores_before", "scores_after"}
    audit = json.loads((run_dir / "summary.json").read_text())["audit"]
    assert set(audit["recovery"]) == {"int4", "relearn_forget"}
    assert audit["scores"]["target"]["none/all"]["forget knowledge"] > audit["scores"]["unlearned"]["none/all"]["forget knowledge"]
    assert audit["floor_model"] == "retain" and audit["scores"]["retain"]["int4"] == audit["scores"]["unlearned"]["int4"]
    recovered = [v for attack in audit["recovery"].values() for v in attack.values() if v is not None]
    assert recovered and max(recovered) <= 1e-9  # at most the floor: nothing above it
    raw = [v for attack in audit["recovery_from_unlearned"].values() for v in attack.values() if v is not None]
    assert max(raw) >= max(recovered)  # read from the unlearned level alone: the upper bound
    assert (run_dir / "audit" / "audit.json").is_file() and (run_dir / "figures" / "audit_recovery.png").stat().st_size > 1000
    md = (run_dir / "report.md").read_text()
    assert "## Audit: forgotten or only hidden?" in md and "Worst-case recovery" in md and "(audit/logit_lens.png)" in md
    assert run_pipeline(audited, progress=False, log=lambda m: None).stages["audit"].skipped


def test_the_audits_never_seen_model(fixture_world, fixture_target, tmp_path, monkeypatch):
    """Which model the audit reads recovery above: a run's retain model, else `audit.retain_model`,
    else — when the run builds its target — the target's recipe on the retain rows; else none."""
    import dataclasses

    from pipelines.config import TargetConfig
    from pipelines.semeval.pipeline import SemEvalPipeline
    from pipelines.stages import path_fingerprint

    config = config_from_mapping(small_config(fixture_world, fixture_target, tmp_path / "run", audit={"enabled": True}))
    p = SemEvalPipeline(config, tmp_path / "run")
    target = {"target": (str(fixture_target), "t")}
    assert p.never_seen_model(target, str(fixture_world), "d") == {}  # a given target and no retain model: none (an upper bound)
    assert p.never_seen_model({**target, "retain": ("R", "r")}, str(fixture_world), "d") == {"retain": ("R", "r")}
    given = dataclasses.replace(config, audit=dataclasses.replace(config.audit, retain_model=str(fixture_target)))
    assert SemEvalPipeline(given, tmp_path / "run").never_seen_model(target, str(fixture_world), "d") == {"retain": (str(fixture_target), path_fingerprint(str(fixture_target)))}
    built = SemEvalPipeline(dataclasses.replace(config, target=TargetConfig(steps=7)), tmp_path / "run")
    calls = []
    monkeypatch.setattr(built, "target_stage", lambda name, cfg, data, inputs, key=None: calls.append((name, cfg, inputs, key)) or ("M", "m"))
    assert built.never_seen_model(target, str(fixture_world), "d") == {"retain": ("M", "m")}
    (name, cfg, inputs, key), = calls
    assert name == "retain_model" and cfg.train_on == "retain" and cfg.steps == 7 and cfg.tokenizer == str(fixture_target) and inputs == ["d", "t"]
    assert key.tokenizer == "the target's"  # the stage key names the target by its fingerprint, not its place


def test_a_moved_run_directory_is_still_done(fixture_run, tmp_path):
    """Stage keys name what a stage read, not where the run directory lies: a copy reruns nothing."""
    import shutil

    config, outcome = fixture_run
    run_pipeline(config, progress=False, log=lambda m: None)  # in place first: another test may have changed a stage there
    moved = Path(shutil.copytree(outcome.run_dir, tmp_path / "moved"))
    logs = []
    again = run_pipeline(config, out=moved, progress=False, log=logs.append)
    assert all(r.skipped for r in again.stages.values()), [name for name, r in again.stages.items() if not r.skipped]


def test_config_errors_and_overrides(tmp_path, fixture_world, fixture_target):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_config(fixture_world, fixture_target, tmp_path / "r")))
    cfg = load_config(path, ["unlearn.lr=1e-5", "trace.select_k=4", "evaluate.mmlu_limit=3"])
    assert cfg.unlearn.lr == 1e-5 and cfg.trace.select_k == 4 and cfg.evaluate.mmlu_limit == 3
    assert cfg.traced_layers
    with pytest.raises(AmnesiaError, match=r"c.yaml: trace: unknown key 'select_kk' \(did you mean 'select_k'\?\); valid keys: kinds, samples"):
        load_config(path, ["trace.select_kk=4"])
    with pytest.raises(AmnesiaError, match=r"c.yaml: unlearn: epochs 'many': expected auto or a positive, finite number of passes over the forget set"):
        load_config(path, ["unlearn.epochs=many"])
    with pytest.raises(AmnesiaError, match=r"c.yaml: trace.samples: expected an integer, got 2.5"):
        load_config(path, ["trace.samples=2.5"])
    with pytest.raises(AmnesiaError, match=r"unknown key 'modle' \(did you mean 'model'\?\)"):
        load_config(path, ["modle=x"])
    with pytest.raises(AmnesiaError, match="give exactly one of 'data'"):
        config_from_mapping({"model": "m"})
    with pytest.raises(AmnesiaError, match=r"c.yaml: unlearn: lr -1.0: expected auto or a positive, finite learning rate"):
        load_config(path, ["unlearn.lr=-1"])
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(path), "trace.bogus=1"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown key 'bogus'" in r.stderr
    # overrides after a flag are overrides too (argparse alone stops the positional list at the flag)
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(path), "--quiet", "unlearn.lr=1e-5", "--force", "trace.bogus=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown key 'bogus'" in r.stderr
    assert not (tmp_path / "r").exists()  # nothing written


def test_controls_layer_sets():
    base = config_from_mapping({"data": "d", "model": "m"})
    import dataclasses

    sweep = control_layer_sets(dataclasses.replace(base, control="sweep"), [1, 2], 6)
    assert list(sweep.values()) == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    rnd = control_layer_sets(dataclasses.replace(base, control="random", control_seed=1), [1, 2], 6)
    (layers,) = rnd.values()
    assert len(layers) == 2 and layers == sorted(layers) and all(0 <= l < 6 for l in layers)
    assert control_layer_sets(dataclasses.replace(base, control="fixed"), [3, 4], 6) == {"fixed_0-1": [0, 1]}
    with pytest.raises(AmnesiaError, match="out of range"):
        control_layer_sets(dataclasses.replace(base, control="fixed", control_layers=[5, 6]), [3, 4], 6)
    # a method that names its paper's layers (RMU: steering layer round(7/32·L), updating the two before it)
    rmu = dataclasses.replace(base, control="fixed", unlearn=dataclasses.replace(base.unlearn, method="rmu"))
    assert control_layer_sets(rmu, [0, 1], 30) == {"paper_5-6-7": [5, 6, 7]}
    assert control_layer_sets(rmu, [0, 1], 6) == {"paper_0-1": [0, 1]}
    assert control_layer_sets(dataclasses.replace(rmu, control_layers=[2, 3]), [0, 1], 30) == {"fixed_2-3": [2, 3]}


def test_demo_config_matches_configs_yaml(monkeypatch, tmp_path, mmlu_dir):
    assert (ROOT / "configs" / "demo.yaml").resolve() == (ROOT / "pipelines" / "demo.yaml").resolve()  # one file, two paths
    assert load_yaml_text((ROOT / "configs" / "demo.yaml").read_text(), "demo.yaml") == demo_mapping()
    cfg = demo_config(mmlu="off", people=8, overrides=["unlearn.epochs=2"])
    assert cfg.world.people == 8 and cfg.unlearn.epochs == 2 and cfg.evaluate.mmlu == "off" and cfg.traced_layers
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("AMNESIA_MMLU_DIR", raising=False)
    source, note = resolve_mmlu(None)  # no flag, no local copy, no Hub: still a complete score
    assert source == "builtin" and "built-in subset" in note and "AMNESIA_MMLU_DIR" in note
    monkeypatch.setenv("AMNESIA_MMLU_DIR", str(mmlu_dir))
    assert resolve_mmlu(None)[0] == str(mmlu_dir)
    assert resolve_mmlu("off")[0] == "off"


def test_notes_say_why_mmlu_is_missing_or_low():
    from pipelines.semeval.report import explain

    low = {"mmlu": {"mode": "builtin"}, "mmlu_average": 0.25, "warnings": ["MMLU average 0.2500 is below the threshold 0.371 (the shared task's floor for 7B)"]}
    off = {"mmlu": None, "warnings": []}
    notes = explain({"scores_before": low, "scores_after": low})
    assert [n for n in notes if "below the threshold" in n] == [
        "MMLU average 0.2500 is below the threshold 0.371 (the shared task's floor for 7B) — before unlearning.",
        "MMLU average 0.2500 is below the threshold 0.371 (the shared task's floor for 7B) — after unlearning.",
    ]
    [note] = [n for n in explain({"scores_before": off, "scores_after": off}) if "MMLU" in n]
    assert "source is off" in note and "--mmlu off)" in note


def test_tables_print_no_negative_zero():
    from pipelines.report import fmt

    assert fmt(-0.0001) == "0.000" and fmt(-0.0001, signed=True) == "+0.000" and fmt(-0.0006) == "-0.001"
