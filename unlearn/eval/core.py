"""``evaluate``: generation, per-row scores and NLL, membership inference, MMLU, aggregation.

The result is the ``scores.json`` dict: the official keys first (``forget-set``, ``retain-set``,
``mia_loss_acc``, ``mia_final_score``, ``mmlu_average``, ``aggregated-terms``,
``harmonic-mean-task-aggregate``, ``aggregate-score``), then our extras (model, data, splits,
ROUGE-1, per-subject MMLU, MIA details, generation details, warnings, config). Nothing in it
depends on the clock: wall times are returned apart (:attr:`Evaluation.timings`, ``timings.json``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tracing.errors import AmnesiaError

from ..data import SemEvalData, load_mia, load_semeval
from ..generation import GenerationOptions, generate
from ..models import context_length, model_id
from ..prompts import format_mismatch, render_prompts
from . import metrics
from .config import DEFAULT_TIE_MARGIN, EvalConfig
from .mmlu import check_mmlu, run_mmlu
from .nll import NLLOptions, completion_nll, document_nll

SCHEMA = 1
KINDS = ("forget", "retain")


@dataclass
class Evaluation:
    """Everything one evaluation produced: the ``scores.json`` dict, the per-row predictions and
    the wall times (``timings.json``; kept out of ``scores.json`` so that the same model, data and
    settings give a byte-identical ``scores.json``)."""

    scores: dict
    predictions: list[dict]
    timings: dict = field(default_factory=dict)


def choose_part(data: SemEvalData, splits: str) -> str:
    """``train`` or ``validation``: ``auto`` picks train — the rows an unlearning request names, as
    the official script reads them — when both train splits exist, else validation."""
    if splits == "auto":
        have = all(f"{k}_train" in data.splits for k in KINDS)
        return "train" if have else "validation"
    for kind in KINDS:
        data.get(kind, splits)  # raises a one-line error naming what the data has
    return splits


def _rows(data: SemEvalData, part: str, limit: int | None) -> list[dict]:
    rows = []
    for kind in KINDS:
        ds = data.get(kind, part)
        n = len(ds) if limit is None else min(limit, len(ds))
        for i in range(n):
            r = ds[i]
            rows.append({"id": r["id"], "task": r["task"], "split": kind, "input": r["input"], "expected_output": r["output"]})
    return rows


def _mia_documents(data: SemEvalData, config: EvalConfig) -> tuple[dict | None, str | None]:
    if config.mia == "off":
        return None, None
    if config.mia:
        return load_mia(config.mia), str(config.mia)
    if data.mia:
        folder = Path(data.source) / "mia_data"
        return data.mia, str(folder if (folder / "member.jsonl").is_file() else Path(data.source))
    return None, None


def tie_margin(model, config) -> float | None:
    """The near-tie rerun margin of ``config.tie_margin``: as set (0 = off), or 1e-3 for a float32 model and off otherwise."""
    if config.tie_margin is not None:
        return config.tie_margin or None
    return DEFAULT_TIE_MARGIN if next(model.parameters()).dtype == torch.float32 else None


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


@dataclass
class Plan:
    """What an evaluation will score, checked before any model work (see :func:`prepare`)."""

    data: SemEvalData
    part: str
    rows: list[dict]
    mia_docs: dict | None
    mia_source: str | None


def prepare(data: SemEvalData | str | Path, config: EvalConfig = EvalConfig()) -> Plan:
    """Check the settings and read the data, MIA documents and MMLU layout; fails fast with one-line errors."""
    config.check()
    if not isinstance(data, SemEvalData):
        data = load_semeval(data)
    part = choose_part(data, config.splits)
    mia_docs, mia_source = _mia_documents(data, config)
    check_mmlu(config.mmlu_config())
    return Plan(data, part, _rows(data, part, config.limit), mia_docs, mia_source)


def check_context(model, tokenizer, plan: Plan, prompts: list[str]) -> None:
    """Raise :class:`AmnesiaError` for a prompt, prompt + expected output or MIA document longer
    than the model's context (``max_position_embeddings``): past it a model with learned positions
    fails and one with rotary positions gives numbers nobody should compare."""
    ctx = context_length(model)
    if ctx is None:
        return

    def lengths(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []

    where = f"{plan.data.source} ({plan.part})"
    sizes = lengths(prompts)
    full = lengths([p + r["expected_output"] for p, r in zip(prompts, plan.rows)])
    for row, n, m in zip(plan.rows, sizes, full):
        if n > ctx:
            raise AmnesiaError(f"{where}: row {row['id']!r} ({row['split']}): the input is {n} tokens, longer than the model's context of {ctx} (max_position_embeddings); shorten the row or leave it out")
        if m > ctx:
            raise AmnesiaError(f"{where}: row {row['id']!r} ({row['split']}): input + output is {m} tokens, longer than the model's context of {ctx} (max_position_embeddings); shorten the row or leave it out")
    for name, docs in (plan.mia_docs or {}).items():
        for i, n in enumerate(lengths(list(docs["document"])), start=1):
            if n > ctx:
                raise AmnesiaError(f"{plan.mia_source}/{name}.jsonl: document {i} is {n} tokens, longer than the model's context of {ctx} (max_position_embeddings)")


def measure_mia(model, tokenizer, members: list[str], nonmembers: list[str], options: NLLOptions = NLLOptions(), *, source: str | None = None) -> dict:
    """The loss-based membership-inference test on ``model`` now: AUC, its score and the mean NLLs.

    A non-finite NLL is a one-line :class:`AmnesiaError` (from :func:`metrics.mia_auc`).
    """
    member = document_nll(model, tokenizer, members, options)
    nonmember = document_nll(model, tokenizer, nonmembers, options)
    auc = metrics.mia_auc(member, nonmember)
    return {"auc": auc, "score": metrics.mia_score(auc), "source": source, "members": len(member), "nonmembers": len(nonmember),
            "member_mean_nll": _mean(member), "nonmember_mean_nll": _mean(nonmember)}


def run_evaluation(model, tokenizer, data: SemEvalData | str | Path, config: EvalConfig = EvalConfig(), *, progress: bool = True, plan: Plan | None = None) -> Evaluation:
    """Score ``model`` on ``data`` (see :func:`unlearn.eval.evaluate`); returns scores and predictions.

    ``plan`` is the result of :func:`prepare` when the caller already checked the inputs.
    """
    start = time.time()
    plan = plan or prepare(data, config)
    data, part, rows, mia_docs, mia_source = plan.data, plan.part, plan.rows, plan.mia_docs, plan.mia_source
    # Every stage tokenizes rendered prompts with the tokenizer's own special tokens (unlearn.prompts).
    prompts = render_prompts(tokenizer, [r["input"] for r in rows], config.prompt_format)
    check_context(model, tokenizer, plan, prompts)
    timings: dict[str, float] = {}

    t = time.time()
    tie = tie_margin(model, config)
    gen = generate(
        model, tokenizer, prompts,
        GenerationOptions(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, clean_up_spaces=config.clean_up_spaces,
                          tie_margin=tie, progress=progress, desc="generate"),
    )
    timings["generation_s"] = time.time() - t

    t = time.time()
    nll = completion_nll(model, tokenizer, prompts, [r["expected_output"] for r in rows],
                         NLLOptions(batch_size=config.batch_size, progress=progress, desc="nll"))
    timings["nll_s"] = time.time() - t

    predictions = []
    for row, text, loss in zip(rows, gen.texts, nll):
        s = metrics.score_row(row["id"], row["expected_output"], text)
        predictions.append({**row, "model_output": text, "nll": loss, "regurgitation": s.regurgitation, "knowledge": s.knowledge, "rouge1": s.rouge1})

    per_split, terms, missing, task_aggregate = metrics.task_scores(predictions)
    warnings = [f"{name} has no rows, left out of the task aggregate" for name in missing]
    mismatch = format_mismatch(getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None), config.prompt_format)
    if mismatch:
        warnings.insert(0, mismatch)
    note = metrics.zero_terms_note(terms)
    if note:
        warnings.append(note)

    mia = None
    if mia_docs is not None:
        t = time.time()
        opts = NLLOptions(batch_size=config.batch_size, progress=progress, desc="mia")
        mia = measure_mia(model, tokenizer, list(mia_docs["member"]["document"]), list(mia_docs["nonmember"]["document"]), opts, source=mia_source)
        timings["mia_s"] = time.time() - t
    else:
        warnings.append("no membership-inference data (pass --mia DIR with member.jsonl and nonmember.jsonl): aggregate-score is -1")

    t = time.time()
    mmlu = run_mmlu(model, tokenizer, config.mmlu_config(), progress=progress)
    if mmlu is not None:
        timings["mmlu_s"] = time.time() - t
        if mmlu["micro"] is not None and mmlu["micro"] < config.mmlu_threshold:
            warnings.append(f"MMLU average {mmlu['micro']:.4f} is below the threshold {config.mmlu_threshold} (the shared task's floor for 7B)")
    else:
        warnings.append("MMLU was not run (its source is off: --mmlu off, or evaluate.mmlu: off in a run config): aggregate-score is -1")
    timings["total_s"] = time.time() - start
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["rows_per_s_generation"] = round(len(rows) / max(timings["generation_s"], 1e-9), 3)

    scores: dict = {"forget-set": per_split["forget"], "retain-set": per_split["retain"]}
    if mia is not None:
        scores["mia_loss_acc"] = mia["auc"]
        scores["mia_final_score"] = mia["score"]
    if mmlu is not None:
        scores["mmlu_average"] = mmlu["micro"]
    scores["aggregated-terms"] = [term.value for term in terms]
    scores["harmonic-mean-task-aggregate"] = task_aggregate
    scores["aggregate-score"] = metrics.final_aggregate(task_aggregate, scores.get("mmlu_average"), scores.get("mia_final_score"))
    scores.update({
        "schema": SCHEMA,
        "kind": "scores",
        "model": model_id(model),
        "data": str(data.source),
        "splits": part,
        "prompt_format": config.prompt_format,
        "rows": {kind: sum(p["split"] == kind for p in predictions) for kind in KINDS},
        "aggregated-term-names": [term.name for term in terms],
        "regurgitation-rouge1": {metrics.SPLIT_KEYS[k]: metrics.rouge1_scores([p for p in predictions if p["split"] == k]) for k in KINDS},
        "mia": mia,
        "mmlu": mmlu if mmlu is not None else {"mode": "off"},
        "generation": {
            "max_new_tokens": config.max_new_tokens,
            "batches": len(gen.batch_sizes),
            "largest_batch": max(gen.batch_sizes, default=0),
            "tie_margin": tie,
            "reruns": len(gen.reruns),
            "min_margin": gen.min_margin,
            "prompt_format": config.prompt_format,
            "new_tokens": sum(gen.new_tokens),
        },
        "warnings": warnings,
        "config": asdict(config),
        "versions": _versions(),
    })
    return Evaluation(scores=scores, predictions=predictions, timings=timings)


def _versions() -> dict:
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        from importlib.metadata import version

        out["lm_eval"] = version("lm_eval")
        out["rouge_score"] = version("rouge-score")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        pass
    return out
