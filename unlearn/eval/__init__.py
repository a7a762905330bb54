"""Evaluation: the official SemEval-2025 Task 4 metrics (batched, identical numbers) and MMLU.

.. code-block:: python

    from unlearn.eval import EvalConfig, evaluate, compare
    from unlearn.models import load_model

    model, tok = load_model("out/unlearned")
    scores = evaluate(model, tok, "../shared/data/semeval25", EvalConfig(mmlu="off"), out="out/eval")
    print(scores["harmonic-mean-task-aggregate"], scores["aggregate-score"])

Modules: :mod:`~unlearn.eval.metrics` (one function per metric), :mod:`~unlearn.eval.nll`
(batched per-row and per-document NLL), :mod:`~unlearn.eval.mmlu` (lm-eval), and
:mod:`~unlearn.eval.report` (files, tables, before/after).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from .config import DEFAULT_TIE_MARGIN, MMLU_THRESHOLD, EvalConfig

# Loaded on first use, so the settings (``unlearn.eval.config``) import without torch.
_LAZY = {
    "Evaluation": ".core",
    "run_evaluation": ".core",
    "check_outputs": ".report",
    "compare": ".report",
    "load_scores": ".report",
    "write_outputs": ".report",
}
__all__ = ["EvalConfig", "Evaluation", "evaluate", "run_evaluation", "compare", "load_scores", "write_outputs", "MMLU_THRESHOLD", "DEFAULT_TIE_MARGIN"]

if TYPE_CHECKING:
    from ..data import SemEvalData
    from .core import Evaluation, run_evaluation
    from .report import compare, load_scores, write_outputs


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'unlearn.eval' has no attribute {name!r}")


def evaluate(
    model,
    tokenizer,
    data: SemEvalData | str | Path,
    config: EvalConfig = EvalConfig(),
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Score ``model`` on SemEval-style ``data``; return the ``scores.json`` dict.

    ``data`` is a :class:`~unlearn.data.SemEvalData` or anything :func:`~unlearn.data.load_semeval`
    reads. With ``out``, ``scores.json``, ``predictions.csv`` and ``timings.json`` are written
    there (atomically; existing files only with ``overwrite``). Use :func:`run_evaluation` to also get the
    per-row predictions in Python.
    """
    from .core import run_evaluation
    from .report import check_outputs, write_outputs

    if out is not None:
        check_outputs(out, overwrite=overwrite)  # before the long work
    result = run_evaluation(model, tokenizer, data, config, progress=progress)
    if out is not None:
        write_outputs(out, result.scores, result.predictions, overwrite=overwrite, timings=result.timings)
    return result.scores
