"""Reliability and safety: `kill -9` and resume, atomic outputs, determinism, safe loading.

The kill tests start the real CLI as a process, wait for its first complete checkpoint,
SIGKILL it mid-training, run the same command again (``--resume`` for ``amnesia unlearn``, a
plain rerun for ``amnesia run``) and compare the final weights bit for bit with an
uninterrupted run of the same settings (CPU, fixed seed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.cli import main
from tracing.errors import AmnesiaError
from unlearn.models import ModelOptions
from unlearn.config import UnlearnConfig
from unlearn.trainer import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
# 96 forget rows / 4 = 24 steps an epoch; 12 steps, a checkpoint every 3: the kill after the
# first one leaves 9 steps to go.
STEPS, SAVE = 12, 3
SETTINGS = dict(layers="0-1", kind="mlp", batch_size=4, grad_accum=1, max_length=64, lr=1e-3, max_steps=STEPS, seed=0, logging_steps=50, save_steps=SAVE)
UNLEARN_ARGS = ["--layers", "0-1", "--kind", "mlp", "--batch-size", "4", "--grad-accum", "1", "--max-length", "64", "--lr", "1e-3",
                "--max-steps", str(STEPS), "--seed", "0", "--logging-steps", "50", "--save-steps", str(SAVE), "--device", "cpu", "--quiet"]
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fixture_world, fixture_target) -> Path:
    """The uninterrupted run of SETTINGS (in this process; same code, same seed, same threads)."""
    from unlearn.api import run_unlearning

    out = tmp_path_factory.mktemp("reference") / "model"
    run_unlearning(fixture_target, fixture_world, out, UnlearnConfig(**SETTINGS), model_options=ModelOptions(device="cpu"), progress=False)
    return out / "model.safetensors"


def start(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "w") as fh:  # a file, not a pipe: a chatty child never blocks on a full pipe
        return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def kill_at_first_checkpoint(proc: subprocess.Popen, root: Path, pattern: str, log: Path, timeout: float = 300) -> Path:
    """Poll for ``root.glob(pattern)`` (a complete checkpoint's marker), then SIGKILL the process."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            return found[0].parent
        if proc.poll() is not None:
            pytest.fail(f"the process ended ({proc.returncode}) before its first checkpoint:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no checkpoint after {timeout} s:\n{log.read_text()[-3000:]}")


def assert_same_weights(path: Path, reference: Path) -> None:
    a, b = load_file(path), load_file(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert path.read_bytes() == reference.read_bytes()


def assert_safetensors_only(folder: Path) -> None:
    names = {p.name for p in folder.rglob("*") if p.is_file()}
    assert "model.safetensors" in names and not {n for n in names if Path(n).suffix in PICKLE_SUFFIXES}, names


# --------------------------------------------------------------------------- kill and resume


def test_kill_9_unlearn_then_resume_gives_the_uninterrupted_weights(tmp_path, fixture_world, fixture_target, reference, capsys):
    out, ckpts = tmp_path / "out", tmp_path / "out.checkpoints"
    argv = ["unlearn", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), *UNLEARN_ARGS]
    proc = start(argv, tmp_path / "log.txt")
    first = kill_at_first_checkpoint(proc, ckpts, "checkpoint-*/amnesia_state.json", tmp_path / "log.txt")
    complete, incomplete = list_checkpoints(ckpts)
    assert complete and complete[-1].name != f"checkpoint-{STEPS}", complete  # killed mid-training
    assert first in complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "out.checkpoints"]  # no output, complete or not

    assert main(argv) == 2  # the plain command refuses to start over silently
    assert "pass --resume to continue it or --overwrite to start over" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert_same_weights(out / "model.safetensors", reference)
    manifest = json.loads((out / "unlearn.json").read_text())
    assert manifest["resumed_from"] == str(complete[-1]) and manifest["steps"] == STEPS
    assert not ckpts.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "out"]
    assert_safetensors_only(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()  # not tempfile's private 0o700
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~_umask()  # nor safetensors' 0o600


def test_kill_9_run_then_plain_rerun_resumes(tmp_path, fixture_world, fixture_target, reference, capsys):
    run_dir = tmp_path / "run"
    config = {
        "name": "kill", "out": str(run_dir), "data": str(fixture_world), "model": str(fixture_target), "loading": {"device": "cpu"},
        "trace": {"kinds": ["mlp"], "samples": 1, "window": 1, "max_facts": 1, "select_k": 2, "heatmaps": 0},
        "unlearn": SETTINGS,
        "evaluate": {"splits": "train", "mmlu": "off", "mia": "off", "limit": 1, "max_new_tokens": 2},
        "retrace": False,
    }
    path = tmp_path / "kill.yaml"
    path.write_text(json.dumps(config))
    proc = start(["run", str(path)], tmp_path / "log.txt")
    kill_at_first_checkpoint(proc, run_dir, "checkpoints/unlearned-*/checkpoint-*/amnesia_state.json", tmp_path / "log.txt")
    assert (run_dir / "trace" / "stage.json").is_file()
    assert not (run_dir / "unlearned").exists()  # nothing a rerun could take for the finished stage

    capsys.readouterr()
    assert main(["run", str(path), "--quiet"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "%|" not in captured.err and "%|" not in printed  # --quiet: no progress bar of any stage
    assert "[trace] unchanged since last run: skipped" in printed
    assert re.search(r"\[unlearned\] resuming from .*checkpoints/unlearned-\w+/checkpoint-\d+", printed), printed
    assert_same_weights(run_dir / "unlearned" / "model.safetensors", reference)
    assert not list(run_dir.glob(".tmp-*")) and not list(run_dir.glob("checkpoints/*/checkpoint-*"))
    assert json.loads((run_dir / "unlearned" / "stage.json").read_text())["record"]["steps"] == STEPS
    assert (run_dir / "report.md").is_file() and (run_dir / "scores_after" / "scores.json").is_file()
    assert_safetensors_only(run_dir / "unlearned")


def test_resume_with_layers_auto_reuses_the_interrupted_runs_trace(tmp_path, fixture_world, fixture_target, capsys):
    import shutil

    out = tmp_path / "out"
    argv = ["unlearn", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--layers", "auto",
            "--trace-max-facts", "1", "--trace-samples", "1", "--trace-k", "2", "--max-steps", "2", "--save-steps", "1",
            "--batch-size", "4", "--grad-accum", "1", "--seed", "0", "--device", "cpu", "--quiet"]
    assert main(argv + ["--keep-checkpoints"]) == 0
    first = (out / "model.safetensors").read_bytes()
    shutil.rmtree(out)  # as if killed after its last checkpoint, before the model was saved
    trace = (tmp_path / "out.trace" / "layers.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 2  # checks every path before tracing again
    assert "out.checkpoints: holds checkpoints of an earlier run" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert f"trace: reusing {tmp_path / 'out.trace' / 'layers.json'}" in capsys.readouterr().err
    assert (tmp_path / "out.trace" / "layers.json").stat().st_mtime_ns == trace
    assert (out / "model.safetensors").read_bytes() == first
    # the last step is never checkpointed (the model is saved right after it): resumed from step 1
    assert json.loads((out / "unlearn.json").read_text())["resumed_from"] == str(tmp_path / "out.checkpoints" / "checkpoint-1")


def debris(root: Path) -> list[str]:
    """What a killed write can leave: ``.tmp-*`` and ``.old-*`` siblings anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name.startswith((".tmp-", ".old-")))


@pytest.mark.parametrize("command", ["trace", "evaluate", "unlearn"])
def test_kill_9_at_any_point_leaves_the_old_output_or_none_and_a_rerun_cleans_up(command, tmp_path, fixture_world, fixture_target):
    """A real SIGKILL at several points of an --overwrite run over a complete output: afterwards the
    output is the old complete one, the new complete one or none (never half of one), the same
    command completes, and no .tmp-*/.old-* debris is left."""
    out = tmp_path / "out"
    argv = {"trace": ["trace", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--max-facts", "4", "--samples", "2",
                      "--kinds", "mlp", "--heatmaps", "1", "--quiet", "--overwrite"],
            "evaluate": ["evaluate", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--mmlu", "off", "--limit", "8",
                         "--quiet", "--overwrite"],
            "unlearn": ["unlearn", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--layers", "0-1", "--kind", "mlp",
                        "--batch-size", "4", "--grad-accum", "1", "--max-length", "64", "--lr", "1e-3", "--max-steps", "6", "--device", "cpu",
                        "--quiet", "--overwrite"]}[command]
    marker = {"trace": "trace.json", "evaluate": "scores.json", "unlearn": "unlearn.json"}[command]
    log = tmp_path / "log.txt"
    started = time.time()
    assert start(argv, log).wait(timeout=300) == 0, log.read_text()[-2000:]
    full = time.time() - started
    complete = sorted(p.name for p in out.iterdir())
    for fraction in (0.6, 0.9, 0.98):
        proc = start(argv, log)
        time.sleep(full * fraction)
        proc.kill()
        proc.wait(timeout=60)
        if out.exists() and (out / marker).exists():
            assert sorted(p.name for p in out.iterdir()) == complete, fraction  # a complete output, old or new
        else:  # none: no marker (evaluate may leave the predictions it wrote before scores.json, which a rerun replaces)
            assert not out.exists() or command == "evaluate", fraction
        assert start(argv, log).wait(timeout=300) == 0, (fraction, log.read_text()[-2000:])
        assert sorted(p.name for p in out.iterdir()) == complete and debris(tmp_path) == [], (fraction, debris(tmp_path))


def test_kill_9_run_at_several_points_then_plain_rerun_completes(tmp_path, fixture_world, fixture_target):
    """`amnesia run` SIGKILLed at several points: every stage folder there is complete (stage.json in it),
    a plain rerun completes, and no .tmp-*/.old-* is left."""
    run_dir = tmp_path / "run"
    config = {
        "name": "kill", "out": str(run_dir), "data": str(fixture_world), "model": str(fixture_target), "loading": {"device": "cpu"},
        "trace": {"kinds": ["mlp"], "samples": 1, "window": 1, "max_facts": 2, "select_k": 2, "heatmaps": 0},
        "unlearn": {**SETTINGS, "save_steps": 0},
        "evaluate": {"splits": "train", "mmlu": "off", "mia": "off", "limit": 2, "max_new_tokens": 4},
        "retrace": True,
    }
    path = tmp_path / "kill.yaml"
    path.write_text(json.dumps(config))
    log = tmp_path / "log.txt"
    started = time.time()
    assert start(["run", str(path), "--quiet"], log).wait(timeout=600) == 0, log.read_text()[-2000:]
    full = time.time() - started
    stages = sorted(p.name for p in run_dir.iterdir() if p.is_dir())
    for fraction in (0.4, 0.7, 0.95):
        proc = start(["run", str(path), "--quiet", "--force"], log)  # --force: every stage is redone, so the kill lands in one
        time.sleep(full * fraction)
        proc.kill()
        proc.wait(timeout=60)
        for folder in (p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "checkpoints"):
            assert (folder / "stage.json").is_file() or folder.name == "figures", (fraction, folder.name)
        assert start(["run", str(path), "--quiet"], log).wait(timeout=600) == 0, (fraction, log.read_text()[-2000:])
        assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == stages and debris(tmp_path) == [], (fraction, debris(tmp_path))


def test_an_output_moved_aside_by_a_killed_replacement_comes_back(tmp_path):
    """The one window a rename cannot close: the old folder moved aside, the new one not yet in.
    The next write to (or check of) that output puts the old one back first."""
    from tracing.io import atomic_path, check_output_dir, recover_output

    out = tmp_path / "trace"
    with atomic_path(out, directory=True) as tmp:
        (tmp / "trace.json").write_text("old")
    aside = tmp_path / ".old-trace-ab12cd34"
    aside.mkdir()
    out.rename(aside / "trace")
    (tmp_path / ".tmp-trace-x9y8z7w6").mkdir()  # the new one, half written, when the kill came
    (tmp_path / ".tmp-trace2-x9y8z7w6").mkdir()  # another output's: not ours to touch
    recover_output(out)
    assert (out / "trace.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [".tmp-trace2-x9y8z7w6", "trace"]
    with pytest.raises(AmnesiaError, match="already exists; pass --overwrite"):  # the old complete output is protected again
        check_output_dir(out, overwrite=False, marker="trace.json", command="trace")


# --------------------------------------------------------------------------- atomic outputs


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_interrupted_scores_never_leave_a_stale_scores_json(tmp_path, monkeypatch):
    import unlearn.eval.report as report

    scores = {"forget-set": {}, "retain-set": {}, "aggregate-score": 0.5}
    report.write_outputs(tmp_path, scores, [], timings={"total_s": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "scores.json", "timings.json"]
    with pytest.raises(AmnesiaError, match="predictions.csv already exists; pass --overwrite"):
        report.write_outputs(tmp_path, scores, [])
    real = report.write_text

    def crash_after_predictions(path, text, **kwargs):
        real(path, text, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_text", crash_after_predictions)
    with pytest.raises(KeyboardInterrupt):
        report.write_outputs(tmp_path, {**scores, "aggregate-score": 0.7}, [], overwrite=True)
    assert not (tmp_path / "scores.json").exists()  # the old one is gone before the new predictions land
    assert not list(tmp_path.glob(".tmp-*"))
    # a kill leaves what it left (a killed atomic write leaves its temporary sibling): a plain rerun
    # replaces those leftovers — there is no complete result to protect — and removes the debris
    monkeypatch.setattr(report, "write_text", real)
    (tmp_path / ".tmp-predictions.csv-x1y2").write_text("half a file")
    report.write_outputs(tmp_path, scores, [], timings={"total_s": 2.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "scores.json", "timings.json"]
    # a predictions.csv that is not ours is never taken for a leftover
    other = tmp_path / "other"
    other.mkdir()
    (other / "predictions.csv").write_text("name,grade\nada,1\n")
    with pytest.raises(AmnesiaError, match="predictions.csv already exists; pass --overwrite"):
        report.write_outputs(other, scores, [])


def test_atomic_outputs_get_normal_permissions_and_overwrite_only_our_own_folders(tmp_path):
    from tracing.io import atomic_path, check_output_dir, write_text

    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "folder", directory=True) as tmp:
            (tmp / "x").write_text("x")
            (tmp / "sub").mkdir(mode=0o700)
            (tmp / "sub" / "private").write_text("y")
            os.chmod(tmp / "sub" / "private", 0o600)
        write_text(tmp_path / "file.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750
    assert [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "folder" / "sub", tmp_path / "folder" / "sub" / "private")] == [0o750, 0o640]
    assert stat.S_IMODE((tmp_path / "file.txt").stat().st_mode) == 0o640
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    check_output_dir(tmp_path / "absent", overwrite=False, marker="unlearn.json", command="unlearn")
    check_output_dir(tmp_path / "folder", overwrite=True, marker="x", command="unlearn")
    with pytest.raises(AmnesiaError, match="already exists; pass --overwrite to replace it"):
        check_output_dir(home, overwrite=False, marker="unlearn.json", command="unlearn")
    with pytest.raises(AmnesiaError, match=r"is not a folder written by `amnesia unlearn` \(it has no unlearn.json\); --overwrite only replaces such folders"):
        check_output_dir(home, overwrite=True, marker="unlearn.json", command="unlearn")
    with pytest.raises(AmnesiaError, match="is a file"):
        check_output_dir(tmp_path / "file.txt", overwrite=True, marker="x", command="trace")


# --------------------------------------------------------------------------- determinism


def test_trace_is_deterministic_and_its_folder_atomic(tmp_path, fixture_world, fixture_target, capsys, monkeypatch):
    """Same settings and seed: byte-identical layers.json (trace.json differs only in 'seconds').
    A trace interrupted while writing leaves no folder, and an old complete one untouched."""
    import pipelines.trace_stage as stage

    argv = ["trace", "--model", str(fixture_target), "--data", str(fixture_world), "--max-facts", "1", "--samples", "2", "--kinds", "mlp",
            "--window", "1", "--select-k", "2", "--heatmaps", "1", "--device", "cpu", "--quiet", "--out"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    traced = []
    real_trace = stage.trace_facts

    def remember(*args, **kwargs):  # the interrupted runs below reuse this result: only the writing is under test
        traced.append(real_trace(*args, **kwargs))
        return traced[-1]

    monkeypatch.setattr(stage, "trace_facts", remember)
    assert main(argv + [str(a)]) == 0
    assert main(argv + [str(b)]) == 0
    assert (a / "layers.json").read_bytes() == (b / "layers.json").read_bytes()
    docs = [json.loads((run / "trace.json").read_text()) for run in (a, b)]
    assert [{k: v for k, v in d.items() if k != "seconds"} for d in docs][0] == {k: v for k, v in docs[1].items() if k != "seconds"}

    def crash(*args, **kwargs):  # aie.png is the folder's last file: everything else is written by now
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "trace_facts", lambda *args, **kwargs: traced[0])
    monkeypatch.setattr(stage, "plot_aie", crash)
    old = {p.name: p.read_bytes() for p in a.rglob("*") if p.is_file()}
    assert main(argv + [str(c)]) == 130
    assert main(argv + [str(a), "--overwrite"]) == 130
    assert {p.name: p.read_bytes() for p in a.rglob("*") if p.is_file()} == old  # the complete old one, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no c, no .tmp-* leftover
    capsys.readouterr()


def test_same_model_data_and_settings_give_a_byte_identical_scores_json(tmp_path, fixture_world, fixture_target, capsys):
    mia = tmp_path / "mia"
    mia.mkdir()
    for name in ("member", "nonmember"):
        lines = (fixture_world / "mia_data" / f"{name}.jsonl").read_text().splitlines()[:3]
        (mia / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["evaluate", "--model", str(fixture_target), "--data", str(fixture_world), "--splits", "train", "--limit", "2",
            "--max-new-tokens", "12", "--mmlu", "off", "--mia", str(mia), "--device", "cpu", "--out"]
    for run in ("a", "b"):
        assert main(argv + [str(tmp_path / run)]) == 0
    capsys.readouterr()
    for name in ("scores.json", "predictions.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    scores = json.loads((tmp_path / "a" / "scores.json").read_text())
    assert "timings" not in scores and scores["mia"]["members"] == 3 and scores["rows"] == {"forget": 2, "retain": 2}
    assert json.loads((tmp_path / "a" / "timings.json").read_text())["total_s"] > 0  # the clock lives beside it


# --------------------------------------------------------------------------- safety


PACKAGES = ("pipelines", "unlearn", "tracing")
FORBIDDEN = {
    r"shell\s*=\s*True": "a shell",
    r"\bos\.(system|popen|exec\w*|spawn\w*)\(": "a shell or another program",
    r"\bsubprocess\b": "another program",
    r"(?<![\w.])(eval|exec)\(": "eval/exec",
    r"\b(pickle|dill|cloudpickle|joblib)\b": "pickle",
    r"\btorch\.(save|load)\(": "pickle weights",
    r"safe_serialization\s*=\s*False": "pickle weights",
    r"trust_remote_code\s*=\s*True": "remote code without the flag",
    r"\byaml\.(unsafe_load|full_load|load_all)\(": "an unsafe YAML loader",
    r"\byaml\.load\((?!.*Loader=yaml_loader\(\))": "an unsafe YAML loader",
    r"\bLoader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)": "an unsafe YAML loader",
}


def code_lines(source: str) -> list[str]:
    """The source with every string literal and comment blanked out (so docs and messages may
    mention pickle or subprocess), line by line."""
    import io
    import tokenize

    lines = [list(line) for line in source.splitlines(keepends=True)]
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT):
            (r0, c0), (r1, c1) = tok.start, tok.end
            for r in range(r0, r1 + 1):
                line = lines[r - 1]
                for c in range(c0 if r == r0 else 0, c1 if r == r1 else len(line)):
                    if line[c] != "\n":
                        line[c] = " "
            if tok.type == tokenize.STRING:
                lines[r0 - 1][c0] = '"'
    return ["".join(line) for line in lines]


def test_no_shell_no_pickle_no_unsafe_yaml_in_the_code():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for lineno, code in enumerate(code_lines(source), start=1):
                for pattern, what in FORBIDDEN.items():
                    if re.search(pattern, code):
                        found.append(f"{path.relative_to(ROOT)}:{lineno}: {what}: {source.splitlines()[lineno - 1].strip()}")
    assert not found, "\n".join(found)
    sample = code_lines('x = "subprocess.run(cmd, shell=True)"  # pickle.load\nos.system(cmd)\n')
    assert [bool(re.search(r"shell\s*=\s*True|\bpickle\b", sample[0])), bool(re.search(r"\bos\.system\(", sample[1]))] == [False, True]
    import yaml

    from tracing.settings import yaml_loader

    assert issubclass(yaml_loader(), yaml.SafeLoader)
    with pytest.raises(AmnesiaError, match="could not determine a constructor"):
        from tracing.settings import load_yaml_text

        load_yaml_text("x: !!python/object/apply:os.getcwd []", "x.yaml")


def test_remote_code_and_pickle_need_their_flags(tmp_path, fixture_target):
    import shutil

    from unlearn.models import _check_local_folder

    model = Path(shutil.copytree(fixture_target, tmp_path / "model"))
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "model_type": "custom", "auto_map": {"AutoModelForCausalLM": "custom.Model"}}))
    with pytest.raises(AmnesiaError, match="runs only with --trust-remote-code"):
        _check_local_folder(model, allow_pickle=False, trust_remote_code=False)
    _check_local_folder(model, allow_pickle=False, trust_remote_code=True)  # the flag lets transformers decide
    (model / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "custom.Model"}}))
    _check_local_folder(model, allow_pickle=False, trust_remote_code=False)  # a known model_type loads transformers' own class
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    with pytest.raises(AmnesiaError, match="only pickle weights"):
        _check_local_folder(model, allow_pickle=False, trust_remote_code=True)
    _check_local_folder(model, allow_pickle=True, trust_remote_code=True)
