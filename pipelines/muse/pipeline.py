"""MUSE end to end (``benchmark: muse`` in a run config): the same trace → unlearn → score loop.

MUSE (Shi et al. 2024) asks a model fine-tuned on news articles (MUSE-News) to forget some of
them and compares it with a *retain model* trained without them. Two kinds of run:

* **CPU-sized** (``muse.mini: true``, the default; ``configs/muse_demo.yaml``): excerpts of MUSE's
  own rows (:mod:`pipelines.muse.mini`), a tiny target and retain model trained here;
* **MUSE's own rows** (``muse.mini: false``; ``configs/muse_news_llama2_7b.yaml``): a given target
  and retain model (the authors' ``muse-bench/MUSE-news_target`` / ``_retrain``), the forget
  corpus ``raw/forget.json`` and retain corpus ``raw/retain1.json`` cut into rows of
  ``chunk_words`` words, scored on the authors' test files as they are.

The stages, each a cached folder of the run directory (:mod:`pipelines.stages`):

* ``request/`` — the unlearning request in the organizers' layout the shared stages read
  (:func:`write_request`): forget rows (documents as prompt → continuation; for the CPU-sized run
  also the forget KnowMem prompts → answers), retain rows likewise, every ``validation_every``-th
  row of each kind in the validation part; ``mia_data/validation/`` with the forget documents as
  members and never-seen *reference* documents (never the PrivLeak holdout: that is the test) as
  non-members — what calibration and checkpoint selection read. The CPU-sized run also writes its
  excerpts in MUSE's layout (``request/muse/``), which its evaluation scores.
* ``target/`` and ``retain_model/`` — CPU-sized: the tiny target on every row, the retain model
  on the retain rows only (the same recipe, seed and tokenizer); otherwise the given models.
* ``trace/`` and ``retrace/`` — causal tracing of the forget KnowMem prompts; the subject is the
  named entity the question is about (:func:`pipelines.muse.mini.question_subject`).
* ``unlearned/`` (and ``control_<label>/``) — the shared trainer on the traced layers, calibrated
  to the reference documents' level, the checkpoint selected on the validation rows.
* ``scores_target/``, ``scores_unlearned/``, ``scores_retain/`` — MUSE's C1–C4
  (:mod:`pipelines.muse.evaluation`); PrivLeak against the retain model's AUC in the report
  (:mod:`pipelines.muse.report`).
* ``audit/`` (``audit.enabled``) — the attacks of :mod:`unlearn.audit` scored with MUSE's metrics
  (:mod:`pipelines.muse.audit`), the retain model the never-seen floor.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.benchmarks import Benchmark, register_benchmark
from pipelines.config import RunSections, config_from_mapping
from pipelines.run import Pipeline, free_model
from pipelines.stages import path_fingerprint
from tracing.errors import AmnesiaError
from tracing.io import atomic_path, write_json
from tracing.settings import setting
from unlearn.data import row_kind

from .config import MuseEvalConfig
from .mini import MiniMuse
from .report import print_muse_headline, write_muse_report

TASK = "Task1"  # long-form documents and questions about them: SemEval's Task 1 shape
#: The unlearning stage's validation membership test on MUSE: PrivLeak's attack on whole documents.
VALIDATION_MIA = {"validation_mia": "min_k", "validation_mia_tokens": "document"}
REQUEST_SCHEMA = 1
MUSE_FOLDER = "muse"  # the request's MUSE-layout folder (what the evaluation reads)


@dataclass(frozen=True)
class MuseSection:
    """Which MUSE rows a run reads: a CPU-sized MUSE of excerpts (:mod:`pipelines.muse.mini`) or MUSE's own."""

    mini: bool = setting(True, help=("a CPU-sized MUSE: excerpts of MUSE's rows, a tiny target and retain model trained here (needs 'target'); "
                                     "false = MUSE's own rows: a given 'model' and 'retain_model', raw/forget.json and raw/retain1.json unlearned, the test files as they are"))
    forget_docs: int = setting(24, help="CPU-sized: forget documents, the first N VerbMem rows cut to excerpts (also N retain, never-seen and reference documents)")
    prompt_words: int = setting(32, help="words of each document row's prompt (CPU-sized: the end of each VerbMem prompt kept); the rest of the document is its output")
    continuation_words: int = setting(64, help="CPU-sized: words of each true continuation kept (its start); retain and never-seen excerpts are prompt + continuation words long")
    qa: int = setting(16, help="CPU-sized: KnowMem questions per side (forget, retain), the first N of each file")
    icl_examples: int | None = setting(2, help="CPU-sized: in-context examples before each KnowMem question (the first N of MUSE's); None = all of them (MUSE: 10)")
    chunk_words: int = setting(1024, help="MUSE's own rows: each article is cut into documents of this many words (MUSE's authors cut at 2048 tokens)")
    validation_every: int = setting(4, help="every N-th row of each kind (documents, questions) forms the validation part")
    scalability: bool = setting(False, help=("C5 scalability: also unlearn growing forget sets, folds 1..k of the forget training rows (k = 1 .. muse.folds; "
                                             "MUSE's scal/forget_k.json when a run on its own rows has them), each from the target, and score each with C1-C4"))
    sustainability: bool = setting(False, help=("C6 sustainability: also unlearn muse.folds disjoint folds of the forget training rows one after another, "
                                                "each from the model the previous one left (MUSE's sust/forget_k.json when given), and score after each"))
    folds: int = setting(4, help="C5/C6: the forget training rows are cut, in order and per kind of row, into this many folds (MUSE: 4)")

    def rows_key(self) -> dict:
        """The settings that choose the request's rows (the C5/C6 switches only add stages)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("scalability", "sustainability", "folds")}

    def check(self) -> None:
        for name in ("forget_docs", "prompt_words", "continuation_words", "qa", "chunk_words"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AmnesiaError(f"muse.{name} {getattr(self, name)!r}: expected a positive integer")
        if self.icl_examples is not None and (not isinstance(self.icl_examples, int) or self.icl_examples < 0):
            raise AmnesiaError(f"muse.icl_examples {self.icl_examples!r}: expected an integer >= 0 (or leave it out: every example)")
        if not isinstance(self.validation_every, int) or self.validation_every < 2:
            raise AmnesiaError(f"muse.validation_every {self.validation_every!r}: expected an integer >= 2 (every N-th row validates)")
        if self.mini and (self.forget_docs < self.validation_every or self.qa < self.validation_every):
            raise AmnesiaError(f"muse.forget_docs {self.forget_docs} / muse.qa {self.qa}: expected at least validation_every ({self.validation_every}) of each, "
                               "so both the training and the validation part have rows")
        if not isinstance(self.folds, int) or self.folds < 2:
            raise AmnesiaError(f"muse.folds {self.folds!r}: expected an integer >= 2 (C5/C6 unlearn the forget set in that many folds)")
        if self.mini and (self.scalability or self.sustainability) and self.folds > self.forget_docs - self.forget_docs // self.validation_every:
            raise AmnesiaError(f"muse.folds {self.folds}: the CPU-sized run has {self.forget_docs - self.forget_docs // self.validation_every} forget training documents "
                               f"(muse.forget_docs {self.forget_docs}, every {self.validation_every}th validating); expected at most one fold per document")
        if self.chunk_words <= self.prompt_words:
            raise AmnesiaError(f"muse.chunk_words {self.chunk_words}: expected more than muse.prompt_words ({self.prompt_words}), so each document has an output")


@dataclass(frozen=True)
class MuseRunConfig(RunSections):
    """Everything a MUSE run does, validated (``benchmark: muse``): the shared sections, the rows
    (``muse``), the retain model (``retain_model``, or built beside the target) and MUSE's evaluation."""

    name: str = "muse"
    benchmark: Literal["muse"] = "muse"
    data: str | None = None
    evaluate: MuseEvalConfig = field(default_factory=MuseEvalConfig)
    muse: MuseSection = field(default_factory=MuseSection)
    retain_model: str | None = None

    def check(self) -> None:
        self.muse.check()
        self.evaluate.check()
        if not self.data:
            raise AmnesiaError("data: expected a MUSE folder in the authors' layout (verbmem/, knowmem/, privleak/, raw/), e.g. ../shared/data/muse_news")
        if self.muse.mini and (self.target is None or self.model is not None or self.retain_model is not None):
            raise AmnesiaError("muse.mini (the CPU-sized run) trains its tiny target and retain model: give 'target', not 'model' or 'retain_model' "
                               "(or set muse.mini: false to unlearn a given MUSE target on MUSE's own rows)")
        if not self.muse.mini and (self.model is None or self.retain_model is None or self.target is not None):
            raise AmnesiaError("muse.mini false (MUSE's own rows): give 'model' (the MUSE target, e.g. muse-bench/MUSE-news_target) and "
                               "'retain_model' (e.g. muse-bench/MUSE-news_retrain), not 'target'")
        if self.prompt_format != "raw":
            raise AmnesiaError(f"prompt_format {self.prompt_format!r}: benchmark muse scores raw text (MUSE's prompts); expected raw")
        super().check()


def muse_config_from_mapping(data: dict, where: str = "config") -> MuseRunConfig:
    """Validate a mapping (``benchmark: muse``) into a :class:`MuseRunConfig` (validation ranks documents as PrivLeak does unless the config says otherwise)."""
    if data.get("unlearn") is None or isinstance(data.get("unlearn"), dict):
        data = {**data, "unlearn": {**VALIDATION_MIA, **(data.get("unlearn") or {})}}
    return config_from_mapping(data, where, MuseRunConfig)


# --------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class MuseRows:
    """What a MUSE run unlearns, validates with and traces, whichever rows it reads.

    ``documents`` / ``questions``: per kind (forget, retain) ``(prompt, output)`` pairs; ``members``
    and ``reference``: the validation membership documents (forget documents; never-seen ones that
    are not the test holdout); ``facts_from``: the forget KnowMem questions and their in-context
    examples; ``mini``: the CPU-sized excerpts (written in MUSE's layout for the evaluation), or None;
    ``given_folds``: MUSE's own C5/C6 forget sets (``scal``, ``sust``: articles per set) when a
    run on its own rows has them."""

    documents: dict[str, list[tuple[str, str]]]
    questions: dict[str, list[tuple[str, str]]]
    members: list[str]
    reference: list[str]
    facts_from: tuple[list[dict], list[dict]]
    mini: MiniMuse | None = None
    given_folds: dict[str, list[list[str]]] = field(default_factory=dict)


def mini_rows(mini, section: MuseSection) -> MuseRows:
    """The CPU-sized run's rows (:mod:`pipelines.muse.mini`): excerpts as prompt → continuation, KnowMem prompts → answers."""
    from .mini import split_words

    return MuseRows(
        documents={"forget": [(r["prompt"], r["gt"]) for r in mini.verbmem], "retain": [split_words(doc, section.prompt_words) for doc in mini.retain_docs]},
        questions={"forget": [(p, r["answer"]) for p, r in zip(mini.forget_qa_prompts(), mini.knowmem_forget)],
                   "retain": [(p, r["answer"]) for p, r in zip(mini.retain_qa_prompts(), mini.knowmem_retain)]},
        members=mini.forget_docs, reference=mini.reference_docs, facts_from=(mini.knowmem_forget, mini.forget_icl), mini=mini)


def corpus_rows(data, section: MuseSection) -> MuseRows:
    """MUSE's own rows: ``raw/forget`` and ``raw/retain1`` cut into documents of ``chunk_words`` words
    (the first ``prompt_words`` the prompt); the reference: ``raw/holdout`` articles that are not
    PrivLeak's holdout ones. One-line errors when a file the run needs is missing."""
    from .mini import split_words, word_chunks

    for name, texts in (("raw/forget.json", data.raw_forget), ("raw/retain1.json (or raw/retain.json)", data.raw_retain),
                        ("raw/holdout.json", data.raw_holdout), ("knowmem/forget_qa.json", data.knowmem_forget)):
        if texts is None:
            raise AmnesiaError(f"{data.source}: no {name} (muse.mini false unlearns MUSE's own corpora and traces its KnowMem questions; "
                               "take the file from the Hub dataset muse-bench/MUSE-News, or run the CPU-sized MUSE)")
    test = [t[:200] for t in data.privleak_holdout]
    reference = [a for a in data.raw_holdout if not any(t in a or a[:200] in h for t, h in zip(test, data.privleak_holdout))]
    if not reference:
        raise AmnesiaError(f"{data.source}: raw/holdout.json: every article is one of privleak/holdout.json's (the test); "
                           "expected never-seen articles beyond them to calibrate with")

    def rows(texts: list[str]) -> list[tuple[str, str]]:
        pairs = (split_words(c, section.prompt_words) for t in texts for c in word_chunks(t, section.chunk_words))
        return [(head, rest) for head, rest in pairs if rest.strip()]

    forget, retain = rows(data.raw_forget), rows(data.raw_retain)
    return MuseRows(documents={"forget": forget, "retain": retain}, questions={"forget": [], "retain": []},
                    members=[p + o for p, o in forget], reference=[p + o for p, o in rows(reference)],
                    facts_from=(data.knowmem_forget, data.knowmem_forget_icl or []),
                    given_folds={mode: sets for mode, sets in (("scal", data.scal), ("sust", data.sust)) if sets})


def _split(rows: list[dict], every: int) -> dict[str, list[dict]]:
    parts: dict[str, list[dict]] = {"train": [], "validation": []}
    for i, row in enumerate(rows):
        parts["validation" if i % every == every - 1 else "train"].append(row)
    return parts


def request_rows(rows: MuseRows, section: MuseSection) -> dict[str, dict[str, list[dict]]]:
    """The request's rows per kind (forget, retain) and part (train, validation): documents (``…sc0``
    ids) and questions (``…qa0``), every ``validation_every``-th of each validating."""
    out = {}
    for kind in ("forget", "retain"):
        docs = [{"id": f"muse-{kind}-doc{i:03d}sc0", "input": p, "output": o, "task": TASK, "split": kind} for i, (p, o) in enumerate(rows.documents[kind])]
        questions = [{"id": f"muse-{kind}-q{i:03d}qa0", "input": p, "output": o, "task": TASK, "split": kind} for i, (p, o) in enumerate(rows.questions[kind])]
        docs_parts, qa_parts = _split(docs, section.validation_every), _split(questions, section.validation_every)
        out[kind] = {part: docs_parts[part] + qa_parts[part] for part in ("train", "validation")}
    return out


def write_request(rows: MuseRows, out: Path, section: MuseSection, source: str, *, forget_train: list[dict] | None = None) -> dict:
    """Write the request (module docstring) into ``out``; return its manifest (``request.json``).

    ``forget_train``: a C5/C6 step's request (:mod:`pipelines.muse.folds`): these forget training
    rows instead of the run's, the same validation rows and reference documents; the members of the
    validation membership test are this step's documents and the validation ones (the forget
    documents it does not request are not asked to look never-seen); no MUSE-layout folder (the
    steps are scored on the run's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .mini import write_muse_folder

    parts_of = request_rows(rows, section)
    members = rows.members
    if forget_train is not None:
        parts_of["forget"] = {**parts_of["forget"], "train": forget_train}
        members = [r["input"] + r["output"] for r in forget_train + parts_of["forget"]["validation"] if row_kind(r["id"]) == "sc"]
    with atomic_path(out, directory=True, overwrite=True) as tmp:
        if rows.mini is not None and forget_train is None:
            write_muse_folder(rows.mini, tmp / MUSE_FOLDER)
        (tmp / "data").mkdir()
        counts = {}
        for kind, parts in parts_of.items():
            for part, part_rows in parts.items():
                if part_rows:
                    pq.write_table(pa.Table.from_pylist(part_rows), tmp / "data" / f"{kind}_{part}-00000-of-00001.parquet")
                counts[f"{kind}_{part}"] = len(part_rows)
        folder = tmp / "mia_data" / "validation"
        folder.mkdir(parents=True)
        for name, docs in (("member", members), ("nonmember", rows.reference)):
            (folder / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}-{i}", "document": d}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
        manifest = {"schema": REQUEST_SCHEMA, "kind": "muse_request", "data": source, "muse": section.rows_key(), "rows": counts,
                    "documents": {"forget": len(rows.documents["forget"]), "retain": len(rows.documents["retain"]), "reference": len(rows.reference)},
                    "questions": {"forget": len(rows.questions["forget"]), "retain": len(rows.questions["retain"]), "icl_examples": len(rows.facts_from[1])}}
        if rows.mini is not None:
            manifest["documents"]["holdout"] = len(rows.mini.holdout_docs)
        if forget_train is not None:
            manifest["documents"]["members"] = len(members)
        write_json(tmp / "request.json", manifest)
    return manifest


def forget_facts(questions: list[dict], icl: list[dict]) -> list:
    """The forget KnowMem prompts whose question names an entity, as facts (subject = that entity)."""
    from tracing.facts import Fact

    from .metrics import icl_prefix, knowmem_prompt
    from .mini import question_subject

    facts = []
    context = icl_prefix(icl)
    for i, row in enumerate(questions):
        subject = question_subject(row["question"], context)
        if subject:
            facts.append(Fact(prompt=knowmem_prompt(row["question"], icl), subject=subject, answer=row["answer"], id=f"muse-forget-q{i:03d}qa0", relation="muse"))
    return facts


# --------------------------------------------------------------------------- the run


class MusePipeline(Pipeline):
    """The shared stages with MUSE's rows, retain model and scores (``inputs``: the :class:`MuseRows`)."""

    config: MuseRunConfig

    @classmethod
    def read_inputs(cls, config: MuseRunConfig) -> MuseRows:
        from .data import load_muse
        from .mini import build_mini

        s, data = config.muse, load_muse(config.data)
        if not s.mini:
            return corpus_rows(data, s)
        mini = build_mini(data, forget_docs=s.forget_docs, prompt_words=s.prompt_words, continuation_words=s.continuation_words, qa=s.qa, icl_examples=s.icl_examples)
        return mini_rows(mini, s)

    @classmethod
    def sources(cls, config: MuseRunConfig) -> list[tuple[str | None, str]]:
        return [(config.model, "model"), (config.retain_model, "model")]  # the data: read_inputs

    def data_path(self) -> tuple[str, str]:
        cfg = self.config

        def build(tmp: Path) -> dict:
            return {"rows": write_request(self.inputs, tmp, cfg.muse, cfg.data)["rows"]}

        key = {"schema": REQUEST_SCHEMA, "data": cfg.data, "muse": cfg.muse.rows_key()}
        res = self.run.stage("request", key, build, inputs=path_fingerprint(cfg.data))
        return str(res.path), res.hash

    def reference_models(self, data: str, data_key: str, target: str, target_key: str) -> dict[str, tuple[str, str]]:
        """The retain model: given, or trained here on the retain rows with the target's settings and tokenizer."""
        return self.given_or_built_retain_model(data, data_key, target, target_key)

    def trace_facts(self, model, tokenizer, data: str):
        return forget_facts(*self.inputs.facts_from)

    def muse_folder(self, data: str) -> Path:
        """What the evaluation scores: the CPU-sized excerpts in the request, or the data folder itself."""
        return Path(data) / MUSE_FOLDER if self.inputs.mini is not None else Path(self.config.data)

    def evaluate(self, name: str, model_path: str, model_key: str, data: str, data_key: str):
        from unlearn.models import load_model

        from .data import load_muse
        from .evaluation import run_muse_evaluation, write_outputs

        cfg = self.config.evaluate
        folder = self.muse_folder(data)

        def build(tmp: Path) -> dict:
            model, tok = load_model(model_path, self.config.loading)
            result = run_muse_evaluation(model, tok, load_muse(folder), cfg, progress=self.progress)
            free_model(model)
            write_outputs(tmp, result)
            return {k: result.scores[k] for k in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak_auc")}

        return self.run.stage(name, dataclasses.asdict(cfg), build, inputs=[model_key, data_key])  # the request's key holds the data's fingerprint

    def benchmark_stages(self, *, trace, unlearned, scores, model: str, model_key: str, data: str, data_key: str) -> None:
        """C5 scalability and C6 sustainability when the config asks (:mod:`pipelines.muse.folds`):
        stages ``<mode>_<k>_request``, ``<mode>_<k>``, ``<mode>_<k>_scores`` per step; :attr:`steps`
        holds, per mode, one record per step (its stages, rows, the rows requested so far) for the report."""
        from .folds import fold_rows, file_fold_rows, requested_scores, step_rows

        config, section = self.config, self.config.muse
        self.steps: dict[str, list[dict]] = {}
        modes = [m for m, on in (("scal", section.scalability), ("sust", section.sustainability)) if on]
        if not modes:
            return
        train = request_rows(self.inputs, section)["forget"]["train"]
        train_ids = [r["id"] for r in train]
        folds = fold_rows(train, section.folds)
        layers, extra_key = self.unlearn_layers(trace)
        done = {(model_key, frozenset(train_ids)): unlearned}  # (start model, rows) -> its unlearning
        scored = {unlearned.hash: scores["unlearned"]}
        for mode in modes:
            given = self.inputs.given_folds.get(mode)
            steps = step_rows(mode, file_fold_rows(given, mode, section, TASK) if given else folds, given=bool(given))
            start, start_key, start_name = model, model_key, "target"
            requested: list[str] = []
            records = []
            for k, rows in enumerate(steps, 1):
                ids = [r["id"] for r in rows]
                requested = list(ids) if mode == "scal" else requested + [i for i in ids if i not in requested]
                stage = done.get((start_key, frozenset(ids)))
                if stage is None:
                    def build(tmp: Path, rows=rows) -> dict:
                        return {"rows": write_request(self.inputs, tmp, section, config.data, forget_train=rows)["rows"]}

                    request = self.run.stage(f"{mode}_{k}_request", {"schema": REQUEST_SCHEMA, "ids": ids}, build, inputs=[data_key])
                    stage = self.unlearn(f"{mode}_{k}", start, start_key, str(request.path), request.hash, layers, extra_key=extra_key)
                    done[(start_key, frozenset(ids))] = stage
                if stage.hash not in scored:
                    scored[stage.hash] = self.evaluate(f"{mode}_{k}_scores", str(stage.path), stage.hash, data, data_key)
                by_rows = requested_scores(scored[stage.hash].path / "predictions.csv", requested, train_ids) if self.inputs.mini is not None else {}
                records.append({"step": k, "unlearned": stage, "scores": scored[stage.hash], "from": start_name, "given": bool(given),
                                "documents": sum(row_kind(i) == "sc" for i in ids), "questions": sum(row_kind(i) == "qa" for i in ids),
                                "requested": len(requested), **by_rows})
                if mode == "sust":
                    start, start_key, start_name = str(stage.path), stage.hash, stage.name
            self.steps[mode] = records

    def audit_task(self, data: str):
        """MUSE's metrics on the rows the run scores (:mod:`pipelines.muse.audit`)."""
        from .audit import MuseAudit
        from .data import load_muse

        return MuseAudit(load_muse(self.muse_folder(data)), self.inputs, self.config.evaluate, prompt_words=self.config.muse.prompt_words,
                         seed=self.config.audit.seed)

    def report(self, run_dir: Path, *, trace, retrace, unlearned, scores: dict, controls: dict, wall_time: float) -> dict:
        return write_muse_report(run_dir, self.config, self.run.results, trace=trace, retrace=retrace, unlearned=unlearned, scores=scores,
                                 controls=controls, wall_time=wall_time, steps=getattr(self, "steps", {}))


SUMMARY = "MUSE (Shi et al. 2024): VerbMem, KnowMem (forget, retain) and PrivLeak against a retain model, on a CPU-sized MUSE-News"
BENCHMARK = register_benchmark(Benchmark(name="muse", summary=SUMMARY, config_from_mapping=muse_config_from_mapping, run=MusePipeline.execute, headline=print_muse_headline))
