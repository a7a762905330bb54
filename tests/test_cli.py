"""The CLI: help texts with defaults, make-world / make-target end to end, one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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


HEAVY = ("torch", "transformers", "datasets", "lm_eval", "transformer_lens", "matplotlib", "numpy")


def test_help_imports_no_heavy_library():
    """`amnesia --help`, every `amnesia COMMAND --help` and argument errors answer without torch & co."""
    code = (
        "import sys, contextlib, io\n"
        "from pipelines.cli import build_parser, main\n"
        "parser = build_parser()\n"
        "for name in parser._subparsers._group_actions[0].choices:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        "with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['unlearn', '--epochs', 'many'])\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"--help imported {r.stdout.strip()}"


def test_help_states_each_default_once():
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        text = sub.format_help()
        assert "(default: None)" not in text, sub.prog
        for opt in sub._actions:
            if not opt.option_strings:
                continue
            rendered = sub.formatter_class(sub.prog)._expand_help(opt) if opt.help else ""
            assert rendered.lower().count("default") <= 1 or "%(default)" in (opt.help or ""), f"{sub.prog} {opt.option_strings[0]}: {rendered!r}"


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


def cli_options() -> dict:
    """Every subcommand's options as a user sees them: option strings → (default, choices, takes a value)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {"/".join(sorted(act.option_strings)): [repr(act.default), list(act.choices) if act.choices else None, act.nargs != 0]
                   for act in parser._actions if act.option_strings}
            for name, parser in sub.choices.items()}


def test_cli_options_and_defaults_are_the_recorded_ones():
    """The options are generated from the config dataclasses: a field's change changes the CLI. This
    snapshot (tests/cli_options.json) makes that a decision: update it with the change, say why."""
    recorded = json.loads((Path(__file__).parent / "cli_options.json").read_text())
    now = cli_options()
    for command in sorted(set(recorded) | set(now)):
        old, new = recorded.get(command, {}), now.get(command, {})
        changed = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
        assert not changed, f"amnesia {command}: options changed (option: (recorded, now)): {changed}"
