"""The CLI: help texts with defaults, make-world / make-target end to end, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.cli import build_parser, main


def amnesia(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_commands_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "make-world" in out and "make-target" in out
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for opt in action._actions:
            if opt.option_strings and opt.dest not in ("help", "debug"):
                assert opt.help, f"{action.prog} {opt.option_strings} has no help"


def test_make_world_cli(tmp_path):
    r = amnesia("make-world", "--out", str(tmp_path / "w"), "--people", "8")
    assert r.returncode == 0, r.stderr
    assert "forget_train" in r.stdout and "totals:" in r.stdout
    again = amnesia("make-world", "--out", str(tmp_path / "w"), "--people", "8")
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already exists; pass --overwrite" in again.stderr


def test_make_target_cli_errors(tmp_path):
    r = amnesia("make-target", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "t"))
    assert r.returncode == 2 and r.stderr.strip() == f"amnesia make-target: error: {tmp_path / 'missing'}: data folder does not exist"
    assert not (tmp_path / "t").exists()
    r = amnesia("make-world", "--people", "x", "--out", str(tmp_path / "w"))
    assert r.returncode == 2 and "invalid int value: 'x'" in r.stderr


def test_make_target_cli_small(tmp_path):
    assert amnesia("make-world", "--out", str(tmp_path / "w"), "--people", "4").returncode == 0
    r = amnesia("make-target", "--data", str(tmp_path / "w"), "--out", str(tmp_path / "t"), "--steps", "2",
                "--layers", "2", "--hidden", "32", "--heads", "2", "--intermediate", "64", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "trained" in r.stdout and (tmp_path / "t" / "target.json").is_file()
