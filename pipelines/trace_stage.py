"""The tracing stage: facts from SemEval-layout data → trace → summary → layers.json + figures.

:func:`run_trace` is what ``amnesia trace`` and ``amnesia unlearn --layers auto`` call. It
writes ``out_dir`` as one folder, atomically (a temporary sibling renamed into place once every
file is written; an existing ``out_dir`` is replaced only with ``overwrite`` and only when it is a
trace folder, one holding ``trace.json``):

* ``trace.json`` — per fact ``prompt, subject, answer, tokens, subject_range, p_clean,
  p_corrupt, ie: {kind: T×L}``, the run's configuration, the ``summary`` (AIE per kind / token
  group / layer with 95 % CIs, average TE, kept and skipped counts) and the skipped facts;
* ``layers.json`` — the selected layers (:mod:`tracing.layers` schema), read by unlearning;
* ``heatmaps/NNN.png`` — the first ``heatmaps`` facts, ROME style;
* ``aie.png`` — AIE curves by token group with CI bands.

Facts: by default the forget set's train part, Task-2 QA rows whose question names its person
(the data the model is to forget). ``FactSource`` picks another split/part, the paper's
rephrasing, or caps the number traced (the first ``max_facts`` that pass the filter, in data
order). A JSON/JSONL file of ``{prompt, subject, answer}`` records works too
(:func:`load_fact_file`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from pipelines.config import PARTS, SPLITS, FactSource, TraceStageConfig  # noqa: F401 - part of this module's API
from tracing.aggregation import aggregate
from tracing.bridge import require_supported
from tracing.errors import AmnesiaError
from tracing.facts import Fact, FactSet, facts_from_records, facts_from_rows, prepare_facts
from tracing.io import atomic_path, check_output_dir
from tracing.layers import LayerSelection
from tracing.plots import plot_aie, plot_fact
from tracing.selection import select_layers
from tracing.driver import trace_facts
from tracing.tracer import TraceResult
from unlearn.data import SemEvalData
from unlearn.prompts import render_prompts


@dataclass
class TraceOutcome:
    """What :func:`run_trace` produced and where it wrote it."""

    result: TraceResult
    summary: dict
    selection: LayerSelection
    paths: dict[str, Path]


def facts_from_data(data: SemEvalData, source: FactSource = FactSource()) -> tuple[list[Fact], list]:
    """Candidate facts (and QA rows naming no subject) from ``data`` as ``source`` says."""
    source.check()
    kinds = ("forget", "retain") if source.split == "all" else (source.split,)
    facts, skipped = [], []
    for kind in kinds:
        f, s = facts_from_rows(data.get(kind, source.part), tasks=source.tasks, rephrase=source.rephrase)
        facts.extend(f)
        skipped.extend(s)
    return facts, skipped


def load_fact_file(path: str | Path) -> list[Fact]:
    """Facts from a JSON list (or ``{"facts": [...]}``) or JSONL file of records.

    Records are ``{prompt, subject, answer}`` (answer appended verbatim) or ROME's known-facts
    ``{prompt, subject, attribute}`` (joined with a space).
    """
    path = Path(path)
    if not path.is_file():
        raise AmnesiaError(f"{path}: facts file does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            obj = json.loads(text)
            records = obj.get("facts") if isinstance(obj, dict) else obj
    except json.JSONDecodeError as exc:
        raise AmnesiaError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise AmnesiaError(f"{path}: expected a list of {{prompt, subject, answer}} records (or {{\"facts\": [...]}})")
    return facts_from_records(records, where=str(path))


def heatmap_name(index: int, fact: Fact) -> str:
    """``000_<row id>.png`` (or ``000.png``): the same name for a fact's trace and re-trace, and
    nothing of the fact's text in it — no name, no answer (an SSN has no place in a file name)."""
    slug = re.sub(r"[^A-Za-z0-9-]+", "_", fact.id).strip("_-")[:60]
    return f"{index:03d}_{slug}.png" if slug else f"{index:03d}.png"


def run_trace(
    model,
    tokenizer,
    data: SemEvalData | Sequence[Fact],
    out_dir: str | Path,
    config: TraceStageConfig = TraceStageConfig(),
    *,
    progress: bool = True,
    overwrite: bool = True,
    log: Callable[[str], None] | None = None,
    check_prediction: bool = True,
) -> TraceOutcome:
    """Build facts, trace them, aggregate, select layers, write all outputs into ``out_dir``.

    ``check_prediction=False`` keeps facts the model no longer predicts (re-tracing the same
    facts on an unlearned model); ROME's known-facts filter is on by default.
    """
    config.check()
    out_dir = Path(out_dir)
    if not overwrite and (out_dir / "trace.json").exists():
        raise AmnesiaError(f"{out_dir / 'trace.json'} already exists; pass --overwrite to replace it")
    check_output_dir(out_dir, overwrite=overwrite, marker="trace.json", command="trace")
    require_supported(model)  # before the facts are prepared: an architecture the bridge cannot hook fails now
    say = log or (lambda message: None)
    if isinstance(data, SemEvalData):
        facts, unnamed = facts_from_data(data, config.facts)
        where = f"{data.source} ({config.facts.split}/{config.facts.part}, {','.join(config.facts.tasks)})"
        if config.facts.prompt_format != "raw":  # trace the text the model is trained and scored on
            wrapped = render_prompts(tokenizer, [f.prompt for f in facts], config.facts.prompt_format)
            facts = [dataclasses.replace(f, prompt=p) for f, p in zip(facts, wrapped)]
    else:
        facts, unnamed, where = list(data), [], "the given facts"
    if not facts and not unnamed:
        raise AmnesiaError(f"{where}: no QA rows to build facts from (expected questions like 'What is NAME's phone number?')")
    prepared = prepare_facts(model, tokenizer, facts, max_tokens=config.trace.max_tokens, check_prediction=check_prediction)
    n_passed = len(prepared.kept)
    capped = FactSet(prepared.kept[: config.facts.max_facts] if config.facts.max_facts else prepared.kept, unnamed + prepared.skipped)
    say(f"facts from {where}: {len(facts) + len(unnamed)} candidates, {n_passed} kept, tracing {len(capped.kept)}")
    result = trace_facts(model, tokenizer, capped, config.trace, progress=progress)
    result.n_passed = n_passed
    summary = aggregate(result.traces)
    summary["counts"] = result.counts()
    selection = select_layers(summary, config.select, model=result.model, method_note=config.trace.method)
    if selection.params.get("warning") and check_prediction:  # a re-trace's selection is not used: the effect is meant to be gone
        say(f"warning: layer selection: {selection.params['warning']}")

    with atomic_path(out_dir, directory=True, overwrite=True) as tmp:  # the folder appears complete or not at all
        result.save(tmp / "trace.json", summary)
        selection.save(tmp / "layers.json")
        (tmp / "heatmaps").mkdir()
        for i, trace in enumerate(result.traces[: config.heatmaps]):
            plot_fact(trace, tmp / "heatmaps" / heatmap_name(i, trace.fact), model=result.model)
        plot_aie(summary, tmp / "aie.png")
    paths = {"trace": out_dir / "trace.json", "layers": out_dir / "layers.json", "heatmaps": out_dir / "heatmaps", "aie": out_dir / "aie.png"}
    return TraceOutcome(result, summary, selection, paths)
