"""The TOFU evaluation of one model: per-row losses, generations and membership scores, then the scores.

TOFU (Maini et al. 2024, github.com/locuslab/tofu, ``evaluate_util.py``) scores four sets — the
perturbed forget set, ``retain_perturbed``, ``real_authors_perturbed`` and
``world_facts_perturbed``. For each row, conditioned on its ``question`` (TOFU's
``question_key: question`` for every set):

* the mean token NLL of the ``answer`` ("Prob." and, on real authors / world facts, the truth
  ratio's true side), of the ``paraphrased_answer`` (forget and retain; elsewhere the answer
  itself, TOFU's ``base_answer_key``) and of each ``perturbed_answer``;
* a greedy generation from the question, scored by ROUGE-L recall against the answer.

For the privacy leak (MUSE / OpenUnlearning), every forget row (members) and holdout row
(non-members) is rendered as in training — the prompt, then the answer — and the NLL of each
scored token is kept: the answer's tokens (``mia_tokens="answer"``, OpenUnlearning's TOFU
privleak, whose QA collator masks the question) or all tokens (``"document"``). Min-K% Prob and
the loss attack rank them (:func:`unlearn.eval.metrics.min_k_score`, :func:`~unlearn.eval.metrics.loss_score`;
the AUC and privleak: :mod:`pipelines.tofu.metrics`).

Prompts are the question rendered with :func:`unlearn.prompts.render_prompts` (``raw``: the
question and a newline, :func:`pipelines.tofu.data.question_text`; ``chat``: the tokenizer's chat
template — the one prompt format of a run) and each completion is scored with
:func:`unlearn.eval.nll.completion_labels` (the prompt's tokens masked); all losses go through
the batched :func:`~unlearn.eval.nll.sequence_nll` / :func:`~unlearn.eval.nll.sequence_token_nll`
and generations through :func:`unlearn.generation.generate`, which equal one row at a time.
TOFU appends an EOS token to the scored answer; here the answer is scored as the run trains it
(no EOS), as in the SemEval evaluation. Forget quality and the privacy leak compare with the
retain model's evaluation: :func:`compare_to_retain`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tracing.errors import AmnesiaError
from unlearn.eval import metrics as membership
from unlearn.eval.core import tie_margin
from unlearn.eval.nll import (
    NLLOptions,
    completion_labels,
    membership_sequences,
    sequence_nll,
    sequence_token_nll,
)
from unlearn.generation import GenerationOptions, generate
from unlearn.models import context_length, model_id
from unlearn.prompts import format_mismatch, render_prompts

from . import metrics as tm
from .config import TofuEvalConfig
from .data import TofuData, question_text

SCHEMA = 1
KIND = "tofu_scores"
#: The evaluation sets, in TOFU's order of report, and the TofuData field each reads.
SETS = ("forget", "retain", "real_authors", "world_facts")
SET_ROWS = {"forget": "forget_perturbed", "retain": "retain_perturbed", "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}
#: TOFU's ``base_answer_key``: the answer the truth ratio puts against the perturbed ones.
PARAPHRASED_KEY = {"forget": "paraphrased_answer", "retain": "paraphrased_answer", "real_authors": "answer", "world_facts": "answer"}
UTILITY_SETS = ("retain", "real_authors", "world_facts")
PREDICTION_COLUMNS = (
    "set", "index", "question", "answer", "generated", "answer_nll", "paraphrased_nll", "perturbed_nlls", "probability",
    "truth_ratio_stat", "truth_ratio", "rouge_l_recall", "rouge1_recall", "min_k_score", "loss_score",
)


@dataclass
class TofuEvaluation:
    """One TOFU evaluation: the scores dict, one record per scored row (``PREDICTION_COLUMNS``) and wall times."""

    scores: dict
    predictions: list[dict]
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- the rows and sequences


def _first(rows: Sequence[dict], limit: int | None) -> list[dict]:
    return list(rows) if limit is None else list(rows[:limit])


def _eval_rows(data: TofuData, limit: int | None) -> dict[str, list[dict]]:
    return {name: _first(getattr(data, SET_ROWS[name]), limit) for name in SETS}


@dataclass(frozen=True)
class _Scored:
    """Where one scored completion belongs: set, row, which answer (``answer``/``paraphrased``/``perturbed``), option."""

    set: str
    row: int
    kind: str
    option: int = 0

    def label(self) -> str:
        """``forget row 3 (answer)``, ``… (paraphrased answer)``, ``… (perturbed answer 2)``: for messages."""
        what = {"answer": "answer", "paraphrased": "paraphrased answer"}.get(self.kind, f"perturbed answer {self.option}")
        return f"{self.set} row {self.row} ({what})"


def _qa_sequences(tokenizer, rows: dict[str, list[dict]], prompts: dict[str, list[str]]) -> tuple[list[_Scored], list[tuple[list[int], list[int]]]]:
    """Every completion TOFU scores, as ``(input_ids, labels)`` with the question masked, and where it belongs."""
    keys: list[_Scored] = []
    pairs: list[tuple[list[int], list[int]]] = []

    def add(key: _Scored, prompt: str, completion: str) -> None:
        keys.append(key)
        pairs.append(completion_labels(tokenizer, prompt, completion))

    for name in SETS:
        for i, (row, prompt) in enumerate(zip(rows[name], prompts[name])):
            add(_Scored(name, i, "answer"), prompt, row["answer"])
            if PARAPHRASED_KEY[name] != "answer":
                add(_Scored(name, i, "paraphrased"), prompt, row[PARAPHRASED_KEY[name]])
            for j, wrong in enumerate(row["perturbed_answer"]):
                add(_Scored(name, i, "perturbed", j), prompt, wrong)
    return keys, pairs


def _check_context(model, where: str, pairs: list[tuple[list[int], list[int]]], names: list[str]) -> None:
    ctx = context_length(model)
    if ctx is None:
        return
    for (ids, _), name in zip(pairs, names):
        if len(ids) > ctx:
            raise AmnesiaError(f"{where}: {name} is {len(ids)} tokens, longer than the model's context of {ctx} (max_position_embeddings)")


def _collect(keys: list[_Scored], nlls: list[float], rows: dict[str, list[dict]], where: str) -> dict[str, list[dict]]:
    """Per set and row: ``{"answer": nll, "paraphrased": nll, "perturbed": [nll, …]}`` (paraphrased = answer where TOFU uses the answer)."""
    out = {name: [{"perturbed": []} for _ in rows[name]] for name in SETS}
    for key, value in zip(keys, nlls):
        if not math.isfinite(value):
            raise AmnesiaError(
                f"{where}: {key.label()}: the NLL is {value} (expected a finite loss: an empty answer scores no token, or the model's outputs are not finite)"
            )
        slot = out[key.set][key.row]
        if key.kind == "perturbed":
            slot["perturbed"].append(value)
        else:
            slot[key.kind] = value
    for name in SETS:
        if PARAPHRASED_KEY[name] == "answer":
            for slot in out[name]:
                slot["paraphrased"] = slot["answer"]
    return out


# --------------------------------------------------------------------------- per-row values and aggregation


def _row_record(name: str, index: int, row: dict, nll: dict, generated: str) -> dict:
    stat = tm.truth_ratio_stat(nll["paraphrased"], nll["perturbed"])
    probability = (tm.normalized_probability(nll["answer"]) if name in ("forget", "retain")
                   else tm.option_probability(nll["answer"], nll["perturbed"]))
    return {
        "set": name, "index": index, "question": row["question"], "answer": row["answer"], "generated": generated,
        "answer_nll": nll["answer"], "paraphrased_nll": nll["paraphrased"] if PARAPHRASED_KEY[name] != "answer" else None,
        "perturbed_nlls": list(nll["perturbed"]), "probability": probability,
        "truth_ratio_stat": stat, "truth_ratio": tm.truth_ratio(nll["paraphrased"], nll["perturbed"]),
        "rouge_l_recall": tm.rouge_l_recall(row["answer"], generated), "rouge1_recall": tm.rouge1_recall(row["answer"], generated),
        "min_k_score": None, "loss_score": None,
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def set_scores(name: str, records: Sequence[dict]) -> tm.SetScores:
    """TOFU's three values of one set from its row records: mean probability, mean ROUGE-L recall, truth-ratio score."""
    return tm.SetScores(
        probability=_mean([r["probability"] for r in records]),
        rouge_l_recall=_mean([r["rouge_l_recall"] for r in records]),
        truth_ratio_score=tm.truth_ratio_score([r["truth_ratio_stat"] for r in records], forget=name == "forget"),
    )


def _membership(model, tokenizer, data: TofuData, config: TofuEvalConfig, nll_options: NLLOptions) -> tuple[dict, list[dict], list[dict]]:
    """Min-K% and loss scores of the forget (member) and holdout (non-member) rows, and both AUCs."""
    forget, holdout = _first(data.forget, config.limit), _first(data.holdout, config.limit)
    prompts = render_prompts(tokenizer, [question_text(r["question"], config.prompt_format, config.question_template) for r in forget + holdout], config.prompt_format)
    pairs = membership_sequences(tokenizer, prompts, [r["answer"] for r in forget + holdout], config.mia_tokens)
    names = [f"forget row {i}" for i in range(len(forget))] + [f"holdout row {i}" for i in range(len(holdout))]
    _check_context(model, data.source, pairs, names)
    tokens = sequence_token_nll(model, pairs, nll_options)
    scored = []
    for name, values in zip(names, tokens):
        if not values:
            raise AmnesiaError(f"{data.source}: {name}: no token to score for membership inference (an empty answer)")
        scored.append({"min_k_score": membership.min_k_score(values, config.mink_k), "loss_score": membership.loss_score(values)})
    members, nonmembers = scored[: len(forget)], scored[len(forget) :]
    mia = {
        "mia.min_k_auc": tm.membership_auc([s["min_k_score"] for s in members], [s["min_k_score"] for s in nonmembers]),
        "mia.loss_auc": tm.membership_auc([s["loss_score"] for s in members], [s["loss_score"] for s in nonmembers]),
        "mia.k": config.mink_k,
        "mia.tokens": config.mia_tokens,
        "mia.forget_rows": len(members),
        "mia.holdout_rows": len(nonmembers),
    }
    holdout_records = [
        {**dict.fromkeys(PREDICTION_COLUMNS), "set": "holdout", "index": i, "question": r["question"], "answer": r["answer"], **s}
        for i, (r, s) in enumerate(zip(holdout, nonmembers))
    ]
    return mia, members, holdout_records


def run_tofu_evaluation(model, tokenizer, data: TofuData, config: TofuEvalConfig = TofuEvalConfig(), *, progress: bool = False) -> TofuEvaluation:
    """Score ``model`` on TOFU ``data`` (see the module docstring for what is measured); ``progress`` shows tqdm bars.

    ``scores`` holds, for each set ``forget``, ``retain``, ``real_authors``, ``world_facts``:
    ``<set>.probability``, ``<set>.rouge_l_recall``, ``<set>.rouge1_recall``,
    ``<set>.truth_ratio_score`` and ``<set>.rows``; ``model_utility`` (the harmonic mean of the
    retain, real-author and world-fact values); ``forget_truth_ratio`` (TOFU's per-row statistic
    ``P_para / geomean(P_pert)`` on the forget set, what forget quality compares);
    ``mia.min_k_auc`` / ``mia.loss_auc`` (forget vs holdout, 1 = memorised); and the split, data,
    model, prompt format, generation details, warnings and config. No clock enters ``scores``.
    """
    start = time.time()
    config.check()
    where = f"{data.source} ({data.split})"
    rows = _eval_rows(data, config.limit)
    questions = [question_text(r["question"], config.prompt_format, config.question_template) for name in SETS for r in rows[name]]
    rendered = iter(render_prompts(tokenizer, questions, config.prompt_format))
    prompts = {name: [next(rendered) for _ in rows[name]] for name in SETS}
    keys, pairs = _qa_sequences(tokenizer, rows, prompts)
    _check_context(model, where, pairs, [k.label() for k in keys])
    nll_options = NLLOptions(batch_size=config.batch_size, progress=progress, desc="tofu nll")
    timings: dict[str, float] = {}

    t = time.time()
    nlls = _collect(keys, sequence_nll(model, pairs, nll_options), rows, where)
    timings["nll_s"] = time.time() - t

    t = time.time()
    tie = tie_margin(model, config)
    flat_prompts = [p for name in SETS for p in prompts[name]]
    gen = generate(model, tokenizer, flat_prompts, GenerationOptions(
        max_new_tokens=config.max_new_tokens, batch_size=config.generation_batch_size, clean_up_spaces=config.clean_up_spaces,
        tie_margin=tie, progress=progress, desc="tofu generate"))
    timings["generation_s"] = time.time() - t
    texts = iter(gen.texts)

    records: dict[str, list[dict]] = {}
    for name in SETS:
        records[name] = [_row_record(name, i, row, nlls[name][i], next(texts)) for i, row in enumerate(rows[name])]

    t = time.time()
    mia, members, holdout_records = _membership(model, tokenizer, data, config, NLLOptions(batch_size=config.batch_size, progress=progress, desc="tofu mia"))
    timings["mia_s"] = time.time() - t
    for record, member in zip(records["forget"], members):
        record.update(member)

    scores = _scores(model, data, config, records, mia, gen, tie)
    timings["total_s"] = time.time() - start
    predictions = [r for name in SETS for r in records[name]] + holdout_records
    return TofuEvaluation(scores=scores, predictions=predictions, timings={k: round(v, 3) for k, v in timings.items()})


def _warnings(model, config: TofuEvalConfig) -> list[str]:
    out = []
    mismatch = format_mismatch(getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None), config.prompt_format)
    if mismatch:
        out.append(mismatch)
    if config.limit is not None:
        out.append(f"limit {config.limit}: only the first {config.limit} rows of each set were scored; the numbers are not the benchmark's")
    return out


def _scores(model, data: TofuData, config: TofuEvalConfig, records: dict[str, list[dict]], mia: dict, gen, tie: float | None) -> dict:
    per_set = {name: set_scores(name, records[name]) for name in SETS}
    scores: dict = {"schema": SCHEMA, "kind": KIND, "benchmark": "TOFU", "split": data.split, "data": data.source,
                    "model": model_id(model), "prompt_format": config.prompt_format}
    for name in SETS:
        s = per_set[name]
        scores[f"{name}.probability"] = s.probability
        scores[f"{name}.rouge_l_recall"] = s.rouge_l_recall
        scores[f"{name}.rouge1_recall"] = _mean([r["rouge1_recall"] for r in records[name]])
        scores[f"{name}.truth_ratio_score"] = s.truth_ratio_score
        scores[f"{name}.rows"] = len(records[name])
    scores["model_utility"] = tm.model_utility(*(per_set[name] for name in UTILITY_SETS))
    scores["forget_truth_ratio"] = [r["truth_ratio_stat"] for r in records["forget"]]
    scores.update(mia)
    scores["generation"] = {
        "max_new_tokens": config.max_new_tokens, "batches": len(gen.batch_sizes), "largest_batch": max(gen.batch_sizes, default=0),
        "tie_margin": tie, "reruns": len(gen.reruns), "min_margin": gen.min_margin, "new_tokens": sum(gen.new_tokens),
    }
    scores["warnings"] = _warnings(model, config)
    scores["config"] = asdict(config)
    return scores


# --------------------------------------------------------------------------- against the retain model


def _check_comparable(scores: dict, retain_scores: dict) -> None:
    for name, s in (("scores", scores), ("retain model's scores", retain_scores)):
        if s.get("kind") != KIND:
            raise AmnesiaError(f"{name}: kind {s.get('kind')!r}, expected {KIND!r} (a TOFU evaluation)")
    for key in ("split", "mia.k", "mia.tokens", "mia.forget_rows", "mia.holdout_rows", "prompt_format"):
        if scores.get(key) != retain_scores.get(key):
            raise AmnesiaError(f"{key}: {scores.get(key)!r} in the scores but {retain_scores.get(key)!r} in the retain model's (expected the same)")
    if len(scores["forget_truth_ratio"]) != len(retain_scores["forget_truth_ratio"]):
        raise AmnesiaError(
            f"forget_truth_ratio: {len(scores['forget_truth_ratio'])} rows in the scores but {len(retain_scores['forget_truth_ratio'])} in the retain model's (expected the same rows)"
        )


def compare_to_retain(scores: dict, retain_scores: dict) -> dict:
    """Forget quality and privacy leak of a model against the retain model (trained without the forget set).

    Both arguments are :attr:`TofuEvaluation.scores` of the same split, rows and settings. Returns
    ``forget_quality`` (the KS-test p-value of the forget-set truth ratios, TOFU), ``ks_statistic``,
    ``privleak`` (Min-K%, MUSE / OpenUnlearning) and ``privleak_loss`` (loss attack), and the
    retain model's AUCs ``retain_model.mia.min_k_auc`` / ``retain_model.mia.loss_auc``.
    """
    _check_comparable(scores, retain_scores)
    quality = tm.forget_quality(scores["forget_truth_ratio"], retain_scores["forget_truth_ratio"])
    return {
        "forget_quality": quality.p_value,
        "ks_statistic": quality.statistic,
        "privleak": tm.privleak(scores["mia.min_k_auc"], retain_scores["mia.min_k_auc"]),
        "privleak_loss": tm.privleak(scores["mia.loss_auc"], retain_scores["mia.loss_auc"]),
        "retain_model.mia.min_k_auc": retain_scores["mia.min_k_auc"],
        "retain_model.mia.loss_auc": retain_scores["mia.loss_auc"],
    }


# --------------------------------------------------------------------------- files


def write_outputs(out, evaluation: TofuEvaluation, *, overwrite: bool = True) -> dict:
    """``predictions.csv`` (columns :data:`PREDICTION_COLUMNS`), ``timings.json`` and, last, ``scores.json`` into ``out``
    (:func:`unlearn.eval.report.write_outputs`, the SemEval evaluation's writer)."""
    from unlearn.eval.report import write_outputs as write

    return write(out, evaluation.scores, evaluation.predictions, overwrite=overwrite, timings=evaluation.timings, columns=PREDICTION_COLUMNS)
