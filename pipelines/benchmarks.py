"""Benchmarks as plug-ins: what ``benchmark:`` in a run config names.

A benchmark is a :class:`Benchmark`: how a config mapping becomes its validated run config, how
a run goes (its data, models and scores around the shared stages of
:class:`pipelines.run.Pipeline`), and what the terminal prints at the end. The built-in ones —
``semeval`` (:mod:`pipelines.semeval.pipeline`), ``tofu`` (:mod:`pipelines.tofu.pipeline`) and ``muse``
(:mod:`pipelines.muse.pipeline`) — are found by module
name the first time they are asked for, as entry points are; anything else registers itself
with :func:`register_benchmark` (``docs/extending.md`` has a worked example). ``amnesia run`` and
:func:`pipelines.run.run_pipeline` know no benchmark by name.

This module imports nothing of the project's: the config loader reads it without loading a
benchmark it does not need.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tracing.errors import AmnesiaError, did_you_mean

#: The built-in benchmarks: the module whose import registers each.
BUILTIN = {"semeval": "pipelines.semeval.pipeline", "tofu": "pipelines.tofu.pipeline", "muse": "pipelines.muse.pipeline"}

_registry: dict[str, "Benchmark"] = {}


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: ``config_from_mapping(mapping, where) -> config`` (validated, one-line errors
    naming ``where``), ``run(config, *, out, force, progress, log) -> RunOutcome`` (every stage, the
    report, ``summary.json``) and ``headline(summary, run_dir)`` (what ``amnesia run`` prints)."""

    name: str
    summary: str
    config_from_mapping: Callable[[dict, str], Any]
    run: Callable[..., Any]
    headline: Callable[[dict, Path], None]


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Make ``benchmark`` what ``benchmark: NAME`` runs (a second one of the same name replaces the first)."""
    if not benchmark.name or not benchmark.name.replace("_", "").replace("-", "").isalnum():
        raise AmnesiaError(f"benchmark {benchmark.name!r}: a name of letters, digits, '-' or '_'")
    _registry[benchmark.name] = benchmark
    return benchmark


def unregister_benchmark(name: str) -> None:
    """Forget a registered benchmark (tests and notebooks that register one for a while)."""
    _registry.pop(name, None)


def benchmark_names() -> tuple[str, ...]:
    """The built-in benchmarks, then the registered ones."""
    return tuple(dict.fromkeys([*BUILTIN, *_registry]))


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (importing a built-in one on first use); a one-line error naming the nearest otherwise."""
    if name not in _registry and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name in _registry:
        return _registry[name]
    names = benchmark_names()
    raise AmnesiaError(f"benchmark {name!r}: unknown{did_you_mean(name, names)}; expected one of {', '.join(names)}")


__all__ = ["BUILTIN", "Benchmark", "benchmark_names", "get_benchmark", "register_benchmark", "unregister_benchmark"]
