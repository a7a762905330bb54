"""TOFU end to end (``benchmark: tofu`` in a run config): the same trace → unlearn → score loop.

TOFU (Maini et al. 2024) asks a model fine-tuned on 200 fictitious authors (``full``) to forget
the last 1 / 5 / 10 % of them, and compares the result with a *retain model* fine-tuned on the
rest only. The stages, each a cached folder of the run directory (:mod:`pipelines.stages`):

* ``request/`` — the TOFU rows as an unlearning request in the organizers' layout the shared
  stages read (:func:`write_request`): forget and retain rows (every ``validation_every``-th
  row of each author in the validation part — all of them are unlearned or kept alike), and
  ``mia_data/validation/`` with the forget rows as members and *never-seen* TOFU authors as
  non-members: the rows of the next larger holdout file that are not this split's test holdout
  (:func:`pipelines.tofu.data.reference_holdout`). Calibration and checkpoint selection read only
  those; the test holdout is read by the privacy-leak test alone.
* ``target/`` and ``retain_model/`` — with a ``target`` section both are trained here (the same
  architecture, seed and tokenizer; the retain model on the retain rows only, ``train_on:
  retain``); otherwise ``model`` and ``retain_model`` name given ones (e.g. OpenUnlearning's
  ``tofu_Llama-3.2-1B-Instruct_full`` / ``_retain99``).
* ``trace/`` and ``retrace/`` — causal tracing of the forget authors' questions that name their
  author (the subject is the author's name, :func:`pipelines.tofu.data.author_name`).
* ``unlearned/`` (and ``control_<method>/`` with ``control: methods``) — the shared trainer on the
  traced layers, with the calibrated forget target and validation-selected checkpoint.
* ``scores_target/``, ``scores_unlearned/``, ``scores_retain/`` — TOFU's metrics
  (:mod:`pipelines.tofu.evaluation`); forget quality and privleak against the retain model are
  computed from them in the report (:mod:`pipelines.tofu.report`).
* ``audit/`` (``audit.enabled``) — the attacks of :mod:`unlearn.audit` scored with TOFU's metrics
  (:mod:`pipelines.tofu.audit`), the retain model among the references.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pipelines.benchmarks import Benchmark, register_benchmark
from pipelines.config import RunSections, config_from_mapping
from pipelines.run import Pipeline, free_model
from pipelines.stages import path_fingerprint
from tracing.errors import AmnesiaError
from tracing.io import atomic_path, write_json

from .config import DEFAULT_QUESTION_TEMPLATE, TofuEvalConfig, check_question_template
from .report import print_tofu_headline, write_tofu_report

TASK = "Task2"  # TOFU rows are question/answer pairs about fictitious people: the shape of SemEval's Task 2
#: The unlearning stage's validation membership test on TOFU: privleak's attack and tokens.
VALIDATION_MIA = {"validation_mia": "min_k", "validation_mia_tokens": "answer"}
REQUEST_SCHEMA = 2  # 2: the validation MIA documents carry their prompt (validation_mia_tokens answer)


@dataclass(frozen=True)
class TofuSection:
    """Which TOFU rows: the forget ``split`` and, for a CPU-sized run, only some retain authors.

    ``retain_authors``: author numbers (0…199) to keep in the retain set; None = every retain
    author (the benchmark). The forget, perturbed-forget and holdout sets always stay whole; the
    utility sets use the ``retain_perturbed`` rows of the kept authors among the first 20.
    ``validation_every``: every N-th row of each author (N−1, 2N−1, …) forms the validation part.
    ``question_template``: the raw prompt of a question (``{question}`` in it; default the question
    and a newline), read by every stage; a model fine-tuned with its own tags takes them here.
    """

    split: Literal["forget01", "forget05", "forget10"] = "forget01"
    retain_authors: list[int] | None = None
    validation_every: int = 4
    question_template: str = DEFAULT_QUESTION_TEMPLATE

    def check(self) -> None:
        if self.validation_every < 2:
            raise AmnesiaError(f"tofu.validation_every {self.validation_every}: expected an integer >= 2 (every N-th row of an author validates)")
        if self.retain_authors is not None and not self.retain_authors:
            raise AmnesiaError("tofu.retain_authors: expected a non-empty list of author numbers (or leave it out: every retain author)")
        check_question_template(self.question_template)


@dataclass(frozen=True)
class TofuRunConfig(RunSections):
    """Everything a TOFU run does, validated (``benchmark: tofu``): the shared sections, the TOFU rows
    (``tofu``), the retain model (``retain_model``, or built beside the target) and TOFU's evaluation."""

    #: ``evaluate`` also holds a copy of ``tofu.question_template`` (:func:`tofu_config_from_mapping`).
    COPIED: ClassVar[dict[str, tuple[str, ...]]] = {**RunSections.COPIED, "evaluate": ("prompt_format", "question_template")}

    name: str = "tofu"
    benchmark: Literal["tofu"] = "tofu"
    data: str = "locuslab/TOFU"
    evaluate: TofuEvalConfig = field(default_factory=TofuEvalConfig)
    tofu: TofuSection = field(default_factory=TofuSection)
    retain_model: str | None = None

    def check(self) -> None:
        self.tofu.check()
        self.evaluate.check()
        if (self.model is None) == (self.target is None):
            raise AmnesiaError("give exactly one of 'model' (the TOFU target: fine-tuned on full) and 'target' (train the tiny target and retain model)")
        if self.model is not None and self.retain_model is None:
            raise AmnesiaError("'model' needs 'retain_model' (the model fine-tuned on the retain set only, e.g. open-unlearning/tofu_Llama-3.2-1B-Instruct_retain99): forget quality compares with it")
        if self.target is not None and self.retain_model is not None:
            raise AmnesiaError("'target' trains the retain model too; leave out 'retain_model' (or give 'model' and 'retain_model')")
        super().check()


def tofu_config_from_mapping(data: dict, where: str = "config") -> TofuRunConfig:
    """Validate a mapping (``benchmark: tofu``) into a :class:`TofuRunConfig` (prompt_format set once, at the top)."""
    if isinstance(data.get("evaluate"), dict) and "question_template" in data["evaluate"]:
        raise AmnesiaError(f"{where}: evaluate.question_template: set tofu.question_template (one prompt for every stage)")
    if data.get("unlearn") is None or isinstance(data.get("unlearn"), dict):
        # TOFU's privacy test ranks Min-K% Prob of the answer tokens: validation (checkpoint
        # selection, the overshoot note) measures the same unless the config says otherwise.
        data = {**data, "unlearn": {**VALIDATION_MIA, **(data.get("unlearn") or {})}}
    config = config_from_mapping(data, where, TofuRunConfig)
    return dataclasses.replace(config, evaluate=dataclasses.replace(config.evaluate, question_template=config.tofu.question_template))


# --------------------------------------------------------------------------- the request folder


def load_data(config: TofuRunConfig):
    """The run's TOFU data: the split, cut to ``tofu.retain_authors`` when given."""
    from pipelines.tofu.data import load_tofu, subset

    data = load_tofu(config.data, config.tofu.split)
    return subset(data, config.tofu.retain_authors) if config.tofu.retain_authors is not None else data


def _request_rows(data, kind: str, prompt_format: str, validation_every: int, template: str) -> dict[str, list[dict]]:
    from pipelines.tofu.data import ROWS_PER_AUTHOR, question_text

    rows = data.forget if kind == "forget" else data.retain
    offset = len(data.retain) if kind == "forget" else 0
    parts: dict[str, list[dict]] = {"train": [], "validation": []}
    for i, row in enumerate(rows):
        author = data.author_of(offset + i)
        within = i % ROWS_PER_AUTHOR
        part = "validation" if within % validation_every == validation_every - 1 else "train"
        parts[part].append({"id": f"tofu-{author:03d}-{within:02d}qa0", "input": question_text(row["question"], prompt_format, template),
                            "output": row["answer"], "task": TASK, "split": kind})
    return parts


def write_request(data, out: Path, *, prompt_format: str = "raw", validation_every: int = 4, question_template: str = DEFAULT_QUESTION_TEMPLATE, tokenizer=None) -> dict:
    """Write ``data`` as an unlearning request folder in the organizers' layout; return its manifest.

    ``data/{forget,retain}_{train,validation}-00000-of-00001.parquet`` (columns ``id, input,
    output, task, split``; ids ``tofu-<author>-<row>qa0``) and ``mia_data/validation/`` (members:
    the forget rows as documents — prompt + answer, rendered as the model reads them, the prompt
    also in a ``prompt`` field so validation can score the answer tokens as privleak does; non-members: never-seen
    authors that are not the test holdout, :func:`pipelines.tofu.data.reference_holdout`) — what
    ``amnesia unlearn`` reads for calibration and validation. No test MIA files: TOFU's privacy
    leak is scored on the split's holdout by the TOFU evaluation. ``request.json`` records it.
    With ``prompt_format="chat"`` the documents are rendered with ``tokenizer``'s chat template
    (the text the model reads), so it is needed then.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.tofu.data import question_text, reference_holdout
    from unlearn.prompts import render_prompts

    def documents(rows: list[dict], kind: str) -> list[dict]:
        prompts = [question_text(r["question"], prompt_format, question_template) for r in rows]
        if prompt_format != "raw":
            if tokenizer is None:
                raise AmnesiaError("prompt_format chat: the request's membership documents need the model's tokenizer")
            prompts = render_prompts(tokenizer, prompts, prompt_format)
        return [{"id": f"{kind}-{i}", "document": p + r["answer"], "prompt": p} for i, (p, r) in enumerate(zip(prompts, rows))]

    reference = reference_holdout(data)
    with atomic_path(out, directory=True, overwrite=True) as tmp:
        (tmp / "data").mkdir()
        counts = {}
        for kind in ("forget", "retain"):
            for part, rows in _request_rows(data, kind, prompt_format, validation_every, question_template).items():
                if rows:
                    pq.write_table(pa.Table.from_pylist(rows), tmp / "data" / f"{kind}_{part}-00000-of-00001.parquet")
                counts[f"{kind}_{part}"] = len(rows)
        if reference is not None:
            folder = tmp / "mia_data" / "validation"
            folder.mkdir(parents=True)
            members, nonmembers = documents(data.forget, "forget"), documents(reference[0], "reference")
            for name, docs in (("member", members), ("nonmember", nonmembers)):
                (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        manifest = {
            "schema": REQUEST_SCHEMA, "kind": "tofu_request", "data": data.source, "split": data.split,
            "forget_authors": list(data.forget_authors), "retain_authors": list(data.retain_authors),
            "rows": counts, "prompt_format": prompt_format, "question_template": question_template, "validation_every": validation_every,
            "reference": {"source": reference[1], "documents": len(reference[0])} if reference else None,
        }
        write_json(tmp / "request.json", manifest)
    return manifest


def forget_facts(data, tokenizer, prompt_format: str, question_template: str = DEFAULT_QUESTION_TEMPLATE) -> list:
    """The forget rows whose question names their author, as facts (subject = the author's name)."""
    from pipelines.tofu.data import ROWS_PER_AUTHOR, author_name, question_text
    from tracing.facts import Fact
    from unlearn.prompts import render_prompts

    picked = []
    for start in range(0, len(data.forget), ROWS_PER_AUTHOR):
        block = data.forget[start : start + ROWS_PER_AUTHOR]
        name = author_name(block)
        author = data.author_of(len(data.retain) + start)
        for within, row in enumerate(block):
            if name and name in row["question"]:
                picked.append((row, name, f"tofu-{author:03d}-{within:02d}qa0"))
    prompts = render_prompts(tokenizer, [question_text(r["question"], prompt_format, question_template) for r, _, _ in picked], prompt_format)
    return [Fact(prompt=p, subject=name, answer=row["answer"], id=rid, relation="tofu") for p, (row, name, rid) in zip(prompts, picked)]


# --------------------------------------------------------------------------- the run


class TofuPipeline(Pipeline):
    """The shared stages (tracing, unlearning, controls) with TOFU's data, models and scores.

    ``inputs`` is the loaded :class:`~pipelines.tofu.data.TofuData` (:meth:`read_inputs`)."""

    config: TofuRunConfig

    @classmethod
    def read_inputs(cls, config: TofuRunConfig):
        return load_data(config)

    @classmethod
    def sources(cls, config: TofuRunConfig) -> list[tuple[str | None, str]]:
        return [(config.model, "model"), (config.retain_model, "model")]  # the data: read_inputs

    def data_path(self) -> tuple[str, str]:
        cfg = self.config
        data = self.inputs

        def build(tmp: Path) -> dict:
            from unlearn.models import load_tokenizer

            tokenizer = load_tokenizer(cfg.model) if cfg.prompt_format != "raw" and cfg.model else None
            manifest = write_request(data, tmp, prompt_format=cfg.prompt_format, validation_every=cfg.tofu.validation_every,
                                     question_template=cfg.tofu.question_template, tokenizer=tokenizer)
            return {"rows": manifest["rows"], "reference": manifest["reference"]}

        key = {"schema": REQUEST_SCHEMA, "data": cfg.data, "tofu": dataclasses.asdict(cfg.tofu), "prompt_format": cfg.prompt_format,
               "tokenizer": cfg.model if cfg.prompt_format != "raw" else None}
        res = self.run.stage("request", key, build, inputs=path_fingerprint(cfg.data))
        return str(res.path), res.hash

    def reference_models(self, data: str, data_key: str, target: str, target_key: str) -> dict[str, tuple[str, str]]:
        """The retain model: given, or trained on the retain rows with the target's settings and tokenizer."""
        return self.given_or_built_retain_model(data, data_key, target, target_key)

    def trace_facts(self, model, tokenizer, data: str):
        return forget_facts(self.inputs, tokenizer, self.config.prompt_format, self.config.tofu.question_template)

    def evaluate(self, name: str, model_path: str, model_key: str, data: str, data_key: str):
        from pipelines.tofu.evaluation import run_tofu_evaluation, write_outputs
        from unlearn.models import load_model

        cfg = self.config.evaluate

        def build(tmp: Path) -> dict:
            model, tok = load_model(model_path, self.config.loading)
            result = run_tofu_evaluation(model, tok, self.inputs, cfg, progress=self.progress)
            free_model(model)
            write_outputs(tmp, result)
            return {"model_utility": result.scores["model_utility"], "mia.min_k_auc": result.scores["mia.min_k_auc"]}

        return self.run.stage(name, dataclasses.asdict(cfg), build, inputs=[model_key, data_key])

    def audit_task(self, data: str):
        """TOFU's metrics on the run's rows; forget quality against the retain model's scores of this run."""
        from .audit import TofuAudit

        retain_scores = json.loads((self.run.results["scores_retain"].path / "scores.json").read_text(encoding="utf-8"))
        return TofuAudit(self.inputs, self.config.evaluate, retain_scores, seed=self.config.audit.seed)

    def report(self, run_dir: Path, *, trace, retrace, unlearned, scores: dict, controls: dict, wall_time: float) -> dict:
        return write_tofu_report(run_dir, self.config, self.run.results, trace=trace, retrace=retrace, unlearned=unlearned, scores=scores,
                                 controls=controls, wall_time=wall_time)


SUMMARY = "TOFU (Maini et al. 2024): forget quality, model utility and privleak against a retain model"
BENCHMARK = register_benchmark(Benchmark(name="tofu", summary=SUMMARY, config_from_mapping=tofu_config_from_mapping, run=TofuPipeline.execute, headline=print_tofu_headline))
