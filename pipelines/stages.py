"""Cached, atomic stages inside one run directory.

A stage is a function ``fn(tmp_dir) -> dict`` that writes its outputs into ``tmp_dir`` and
returns a small JSON-able record. :meth:`RunDir.stage` runs it in a temporary sibling of
``run_dir/NAME`` and renames the folder into place only when it finished, with a ``stage.json``
inside recording the stage's fingerprint (a hash of its config and inputs), its record and its
wall time. A rerun skips the stage when ``stage.json`` is there and the fingerprint matches;
``force=True`` reruns it; an interrupted stage leaves only a ``.tmp-*`` folder, which is removed
and redone, never mistaken for complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tracing.errors import AmnesiaError
from tracing.io import atomic_path, write_json

MARKER = "stage.json"


def fingerprint(obj: Any) -> str:
    """A stable hash of a JSON-able object (configs, paths, upstream hashes)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def path_fingerprint(path: str | Path) -> str:
    """Identify a user input folder/file cheaply: relative names, sizes and mtimes of its files.

    A Hub id (not a local path) is fingerprinted by its name.
    """
    p = Path(path)
    if not p.exists():
        return fingerprint(str(path))
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    entries = [(str(f.relative_to(p)) if f != p else f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return fingerprint([str(p.resolve()), entries])


@dataclass
class StageResult:
    name: str
    path: Path
    record: dict
    seconds: float
    skipped: bool
    hash: str


@dataclass
class RunDir:
    """A run directory whose stages are cached by fingerprint."""

    root: Path
    force: bool = False
    log: Callable[[str], None] = print
    results: dict[str, StageResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):  # left by an interrupted stage
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()

    def completed(self, name: str, key: str) -> dict | None:
        """The stage's marker when it completed with fingerprint ``key``."""
        marker = self.root / name / MARKER
        if not marker.is_file():
            return None
        try:
            info = json.loads(marker.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return info if info.get("hash") == key else None

    def stage(self, name: str, config: Any, fn: Callable[[Path], dict], *, inputs: Any = None) -> StageResult:
        """Run stage ``name`` unless a complete run with the same config and inputs exists."""
        key = fingerprint({"stage": name, "config": config, "inputs": inputs})
        dest = self.root / name
        info = None if self.force else self.completed(name, key)
        if info is not None:
            self.log(f"[{name}] unchanged since last run: skipped ({dest})")
            result = StageResult(name, dest, info.get("record", {}), info.get("seconds", 0.0), True, key)
        else:
            self.log(f"[{name}] running")
            start = time.time()
            with atomic_path(dest, directory=True, overwrite=True) as tmp:
                record = fn(tmp) or {}
                if not isinstance(record, dict):
                    raise AmnesiaError(f"stage {name} returned {type(record).__name__}, expected a dict")
                seconds = time.time() - start
                write_json(tmp / MARKER, {"schema": 1, "stage": name, "hash": key, "seconds": round(seconds, 3), "config": config, "record": record})
            self.log(f"[{name}] done in {seconds:.1f}s")
            result = StageResult(name, dest, record, seconds, False, key)
        self.results[name] = result
        return result
