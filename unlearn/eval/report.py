"""Writing and showing evaluation results: ``scores.json``, ``predictions.csv``, tables, before/after.

Every file is written atomically (``tracing.io``); an existing ``scores.json``,
``predictions.csv`` or ``timings.json`` is only replaced with ``overwrite=True``; ``scores.json``
is written last and marks a finished evaluation.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Sequence

from tracing.errors import AmnesiaError
from tracing.io import write_json, write_text

PREDICTION_COLUMNS = ("id", "task", "split", "input", "expected_output", "model_output", "nll", "regurgitation", "knowledge", "rouge1")
OFFICIAL_KEYS = ("forget-set", "retain-set", "harmonic-mean-task-aggregate", "aggregate-score")


# --------------------------------------------------------------------------- files


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def predictions_csv(predictions: Sequence[dict], columns: Sequence[str] = PREDICTION_COLUMNS) -> str:
    """``predictions.csv`` text: one row per scored row, ``columns`` (default :data:`PREDICTION_COLUMNS`).

    ``regurgitation`` (ROUGE-L recall) and ``rouge1`` are empty for QA rows, ``knowledge`` (0/1)
    for sentence-completion rows; floats are written so they read back identical, lists as JSON.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for p in predictions:
        writer.writerow([json.dumps(p[c]) if isinstance(p.get(c), list) else _cell(p.get(c)) for c in columns])
    return buf.getvalue()


OUTPUT_NAMES = ("predictions.csv", "scores.json", "timings.json")


def _leftover(path: Path, complete: Path | None, columns: Sequence[str]) -> bool:
    """An output of an evaluation killed before it finished: ``complete`` (scores.json) is absent and
    ``path`` is one of ours (a predictions.csv with the writer's ``columns``, a timings.json), so a rerun may replace it."""
    if complete is None or complete.exists() or path == complete:
        return False
    if path.name == "predictions.csv":
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n").split(",") == list(columns)
    return path.name == "timings.json"


def check_outputs(out: str | Path, *, overwrite: bool = False, names: Sequence[str] = OUTPUT_NAMES, complete: str | None = None,
                  columns: Sequence[str] = PREDICTION_COLUMNS) -> list[Path]:
    """The output paths in ``out``; raises when ``out`` is a file or (without ``overwrite``) one exists —
    except the leftovers of a run killed before it wrote ``complete`` (scores.json; its predictions.csv in ``columns``), which a rerun replaces."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AmnesiaError(f"--out {out}: is a file; expected a folder for {' and '.join(names)}")
    paths = [out / name for name in names]
    done = out / complete if complete else None
    if not overwrite:
        for path in paths:
            if path.exists() and not _leftover(path, done, columns):
                raise AmnesiaError(f"{path} already exists; pass --overwrite to replace it")
    return paths


def write_outputs(out: str | Path, scores: dict, predictions: Sequence[dict], *, overwrite: bool = False, timings: dict | None = None,
                  columns: Sequence[str] = PREDICTION_COLUMNS) -> dict[str, Path]:
    """Write ``predictions.csv``, ``timings.json`` (when given) and then ``scores.json`` into ``out``.

    ``scores.json`` is the mark of a finished evaluation: an old one is removed first and the new
    one written last, so an interrupted write never leaves a ``scores.json`` beside the
    predictions of another run.
    """
    out = Path(out)
    csv_path, json_path, timings_path = check_outputs(out, overwrite=overwrite, complete="scores.json", columns=columns)
    paths = {"predictions": csv_path, "scores": json_path}
    out.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)
    write_text(paths["predictions"], predictions_csv(predictions, columns))
    if timings is not None:
        paths["timings"] = write_json(timings_path, timings)
    else:
        timings_path.unlink(missing_ok=True)
    write_json(paths["scores"], scores)
    for name in OUTPUT_NAMES:  # the temporary files of a write that was killed (atomic_path's siblings)
        for debris in out.glob(f".tmp-{name}-*"):
            debris.unlink(missing_ok=True)
    return paths


def load_scores(path: str | Path) -> dict:
    """Read a ``scores.json`` (ours or the official script's ``evaluation_results.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "scores.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AmnesiaError(f"{path}: scores file does not exist (expected a scores.json written by amnesia evaluate)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AmnesiaError(f"{path}: not a JSON scores file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("forget-set", "retain-set")):
        raise AmnesiaError(f"{path}: not a scores file (expected the keys forget-set and retain-set)")
    numbers = 0
    for _, keys, _ in comparison_metrics(data, data):
        value = data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AmnesiaError(f"{path}: {'/'.join(keys)} is {type(value).__name__} {value!r}"[:200] + " (expected a number)")
        numbers += 1
    if not numbers:
        raise AmnesiaError(f"{path}: no metric to compare (expected numbers such as forget-set/overall-regurgitation-score)")
    return data


# --------------------------------------------------------------------------- before/after


def _get(scores: dict, path: tuple[str, ...]):
    value = scores
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if (path == ("aggregate-score",) and value == -1) else float(value)
    return None


def _tasks(*scores: dict) -> list[str]:
    names = set()
    for s in scores:
        for split in ("forget-set", "retain-set"):
            names.update(k for k, v in (s.get(split) or {}).items() if isinstance(v, dict))
    return sorted(names)


def comparison_metrics(before: dict, after: dict) -> list[tuple[str, tuple[str, ...], str]]:
    """``(label, key path, better)`` for every compared number; better is lower, higher or 0.5."""
    rows = []
    for split, better in (("forget-set", "lower"), ("retain-set", "higher")):
        name = split.split("-")[0]
        rows.append((f"{name} regurgitation", (split, "overall-regurgitation-score"), better))
        rows.append((f"{name} knowledge", (split, "overall-knowledge-score"), better))
    for task in _tasks(before, after):
        for split, better in (("forget-set", "lower"), ("retain-set", "higher")):
            name = split.split("-")[0]
            rows.append((f"{name} {task} regurgitation", (split, task, "regurgitation-score"), better))
            rows.append((f"{name} {task} knowledge", (split, task, "knowledge-score"), better))
    rows += [
        ("MIA AUC (mia_loss_acc)", ("mia_loss_acc",), "0.5"),
        ("MIA score", ("mia_final_score",), "higher"),
        ("MMLU average", ("mmlu_average",), "higher"),
        ("task aggregate (harmonic mean)", ("harmonic-mean-task-aggregate",), "higher"),
        ("aggregate score", ("aggregate-score",), "higher"),
    ]
    return rows


def compare(before: dict, after: dict) -> list[dict]:
    """Before/after rows: ``{metric, key, before, after, delta, better, improved}``.

    ``better`` says which way is good (forget scores: lower; retain, MMLU, aggregates: higher;
    the MIA AUC: closer to 0.5); ``improved`` is None when either side is missing or unchanged.
    An ``aggregate-score`` of −1 (MMLU or MIA missing) counts as missing.
    """
    out = []
    for label, path, better in comparison_metrics(before, after):
        b, a = _get(before, path), _get(after, path)
        delta = a - b if a is not None and b is not None else None
        improved = None
        if delta:
            if better == "lower":
                improved = delta < 0
            elif better == "higher":
                improved = delta > 0
            else:
                improved = abs(a - 0.5) < abs(b - 0.5)
        out.append({"metric": label, "key": "/".join(path), "before": b, "after": a, "delta": delta, "better": better, "improved": improved})
    return out


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def comparison_markdown(rows: Sequence[dict], before_name: str = "before", after_name: str = "after") -> str:
    """A Markdown table of :func:`compare` rows."""
    lines = [f"| metric | {before_name} | {after_name} | change | better |", "|---|---:|---:|---:|---|"]
    for r in rows:
        mark = "" if r["improved"] is None else (" ✓" if r["improved"] else " ✗")
        better = "closer to 0.5" if r["better"] == "0.5" else r["better"]
        lines.append(f"| {r['metric']} | {_fmt(r['before'])} | {_fmt(r['after'])} | {_fmt(r['delta'], True)}{mark} | {better} |")
    return "\n".join(lines) + "\n"


def write_comparison(out: str | Path, rows: Sequence[dict], before_name: str, after_name: str, *, overwrite: bool = False) -> dict[str, Path]:
    """Write ``comparison.json`` and ``comparison.md`` into ``out``."""
    out = Path(out)
    json_path, md_path = check_outputs(out, overwrite=overwrite, names=("comparison.json", "comparison.md"))
    paths = {"json": json_path, "markdown": md_path}
    out.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)  # written last: an interrupted write leaves no comparison.json
    write_text(paths["markdown"], f"# {after_name} vs {before_name}\n\n" + comparison_markdown(rows, before_name, after_name))
    write_json(paths["json"], {"schema": 1, "kind": "comparison", "before": before_name, "after": after_name, "rows": list(rows)})
    return paths


# --------------------------------------------------------------------------- rich tables


def scores_tables(scores: dict):
    """Two rich tables: per split/task metrics, and the aggregates (with MMLU and MIA)."""
    from rich.table import Table

    tasks = _tasks(scores)
    per = Table(title="SemEval-2025 Task 4 metrics (forget: lower is better; retain: higher)", title_justify="left")
    per.add_column("metric")
    per.add_column("forget ↓", justify="right")
    per.add_column("retain ↑", justify="right")
    for label, key in (("regurgitation (ROUGE-L recall)", "overall-regurgitation-score"), ("knowledge (exact match)", "overall-knowledge-score")):
        per.add_row(label, _fmt(_get(scores, ("forget-set", key))), _fmt(_get(scores, ("retain-set", key))))
    for task in tasks:
        for label, key in (("regurgitation", "regurgitation-score"), ("knowledge", "knowledge-score")):
            per.add_row(f"  {task} {label}", _fmt(_get(scores, ("forget-set", task, key))), _fmt(_get(scores, ("retain-set", task, key))))
    agg = Table(title="Aggregates", title_justify="left")
    agg.add_column("metric")
    agg.add_column("value", justify="right")
    agg.add_column("note")
    mmlu = scores.get("mmlu") or {}
    mia = scores.get("mia") or {}
    agg.add_row("task aggregate (harmonic mean of %d)" % len(scores.get("aggregated-terms", [])), _fmt(_get(scores, ("harmonic-mean-task-aggregate",))), "")
    agg.add_row("MIA AUC", _fmt(_get(scores, ("mia_loss_acc",))), f"{mia.get('members', 0)} members / {mia.get('nonmembers', 0)} non-members" if mia else "no MIA data")
    agg.add_row("MIA score", _fmt(_get(scores, ("mia_final_score",))), "1 − 2·|AUC − 0.5|")
    mmlu_note = "off" if mmlu.get("mode") == "off" else f"{mmlu.get('questions', 0)} questions, {len(mmlu.get('subjects', {}))} subjects, macro {_fmt(mmlu.get('macro'))}"
    agg.add_row("MMLU average", _fmt(_get(scores, ("mmlu_average",))), mmlu_note)
    final = scores.get("aggregate-score")
    agg.add_row("aggregate score", _fmt(final) if final != -1 else "-1", "needs MMLU and MIA" if final == -1 else "mean of the three above")
    return per, agg


def comparison_table(rows: Sequence[dict], before_name: str = "before", after_name: str = "after"):
    """A rich table of :func:`compare` rows."""
    from rich.table import Table

    table = Table(title=f"{after_name} vs {before_name}", title_justify="left")
    for col, justify in (("metric", "left"), (before_name, "right"), (after_name, "right"), ("change", "right"), ("better", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        change = _fmt(r["delta"], True)
        if r["improved"] is not None:
            change = f"[{'green' if r['improved'] else 'red'}]{change}[/]"
        table.add_row(r["metric"], _fmt(r["before"]), _fmt(r["after"]), change, "closer to 0.5" if r["better"] == "0.5" else r["better"])
    return table
