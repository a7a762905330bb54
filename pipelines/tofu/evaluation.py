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

Conventions (``scores["conventions"]``), by default OpenUnlearning's (github.com/locuslab/open-unlearning,
``src/data/utils.py``, ``src/evals/metrics/utils.py``, ``configs/generation/default.yaml``):
every scored answer ends with the tokenizer's EOS (``answer_eos``), counted in the answer's mean
NLL (Prob., truth ratio, the loss, zlib and reference attacks) and dropped where OpenUnlearning
drops the last label (Min-K%, Min-K%++, gradnorm, exact memorization, extraction strength);
generation runs up to 200 new tokens. ``--no-answer-eos`` scores the answer alone, as unlearning
trains it. Beside TOFU's own numbers: OpenUnlearning's sub-metrics (Prob. of the paraphrased and
of the perturbed answers, ROUGE-L recall of the generation against them), exact memorization and
extraction strength on the forget set, and the membership family (Min-K%, loss, zlib, Min-K%++,
gradnorm on request; the reference attack against the retain model in :func:`compare_to_retain`).
Where OpenUnlearning's extraction strength loop differs from the definition, the definition is
the default (``es_openunlearning``: its value). Forget quality and the privacy leak compare with
the retain model's evaluation: :func:`compare_to_retain`.
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
    IGNORE,
    NLLOptions,
    completion_labels,
    membership_sequences,
    sequence_grad_norm,
    sequence_nll,
    sequence_token_stats,
)
from unlearn.generation import GenerationOptions, generate
from unlearn.models import check_fits_context, model_id
from unlearn.prompts import format_mismatch, render_prompts

from . import metrics as tm
from .config import DEFAULT_MAX_NEW_TOKENS, TofuEvalConfig
from .data import TofuData, question_text

SCHEMA = 2  # 2: answers scored with EOS by default; forget.truth_ratios (R_truth per row) replaces forget_truth_ratio (its inverse)
KIND = "tofu_scores"
#: The evaluation sets, in TOFU's order of report, and the TofuData field each reads.
SETS = ("forget", "retain", "real_authors", "world_facts")
SET_ROWS = {"forget": "forget_perturbed", "retain": "retain_perturbed", "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}
#: TOFU's ``base_answer_key``: the answer the truth ratio puts against the perturbed ones.
PARAPHRASED_KEY = {"forget": "paraphrased_answer", "retain": "paraphrased_answer", "real_authors": "answer", "world_facts": "answer"}
UTILITY_SETS = ("retain", "real_authors", "world_facts")
PREDICTION_COLUMNS = (
    "set", "index", "question", "answer", "generated", "answer_nll", "paraphrased_nll", "perturbed_nlls", "probability",
    "paraphrased_probability", "perturbed_probability", "truth_ratio_stat", "truth_ratio", "rouge_l_recall", "rouge1_recall",
    "paraphrased_rouge_l_recall", "perturbed_rouge_l_recall", "exact_memorization", "extraction_strength",
    "min_k_score", "loss_score", "zlib_score", "min_k_plus_plus_score", "gradnorm_score",
)
#: The membership scores of each attack (``mia_attacks``), in the prediction columns.
ATTACK_COLUMNS = {"min_k": "min_k_score", "loss": "loss_score", "zlib": "zlib_score", "min_k++": "min_k_plus_plus_score", "gradnorm": "gradnorm_score"}
#: scores.json's AUC key of each attack (OpenUnlearning's mia_* metrics).
ATTACK_KEYS = {"min_k": "mia.min_k_auc", "loss": "mia.loss_auc", "zlib": "mia.zlib_auc", "min_k++": "mia.min_k_plus_plus_auc", "gradnorm": "mia.gradnorm_auc"}


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


def _qa_sequences(tokenizer, rows: dict[str, list[dict]], prompts: dict[str, list[str]], eos: bool = True) -> tuple[list[_Scored], list[tuple[list[int], list[int]]]]:
    """Every completion TOFU scores, as ``(input_ids, labels)`` with the question masked (``eos``: EOS appended), and where it belongs."""
    keys: list[_Scored] = []
    pairs: list[tuple[list[int], list[int]]] = []

    def add(key: _Scored, prompt: str, completion: str) -> None:
        keys.append(key)
        pairs.append(completion_labels(tokenizer, prompt, completion, eos=eos))

    for name in SETS:
        for i, (row, prompt) in enumerate(zip(rows[name], prompts[name])):
            add(_Scored(name, i, "answer"), prompt, row["answer"])
            if PARAPHRASED_KEY[name] != "answer":
                add(_Scored(name, i, "paraphrased"), prompt, row[PARAPHRASED_KEY[name]])
            for j, wrong in enumerate(row["perturbed_answer"]):
                add(_Scored(name, i, "perturbed", j), prompt, wrong)
    return keys, pairs


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
    paraphrased = PARAPHRASED_KEY[name] != "answer"
    return {
        **dict.fromkeys(PREDICTION_COLUMNS),
        "set": name, "index": index, "question": row["question"], "answer": row["answer"], "generated": generated,
        "answer_nll": nll["answer"], "paraphrased_nll": nll["paraphrased"] if paraphrased else None,
        "perturbed_nlls": list(nll["perturbed"]), "probability": probability,
        "paraphrased_probability": tm.normalized_probability(nll["paraphrased"]) if paraphrased else None,
        "perturbed_probability": _mean([tm.normalized_probability(x) for x in nll["perturbed"]]),
        "truth_ratio_stat": stat, "truth_ratio": tm.truth_ratio(nll["paraphrased"], nll["perturbed"]),
        "rouge_l_recall": tm.rouge_l_recall(row["answer"], generated), "rouge1_recall": tm.rouge1_recall(row["answer"], generated),
        "paraphrased_rouge_l_recall": tm.rouge_l_recall(row[PARAPHRASED_KEY[name]], generated) if paraphrased else None,
        "perturbed_rouge_l_recall": _mean([tm.rouge_l_recall(wrong, generated) for wrong in row["perturbed_answer"]]),
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


def _membership(model, tokenizer, data: TofuData, config: TofuEvalConfig, nll_options: NLLOptions, progress: bool = False) -> tuple[dict, list[dict], list[dict]]:
    """The membership scores of the forget (member) and holdout (non-member) rows under each attack
    of ``config.mia_attacks`` (Min-K% always: privleak's), each attack's AUC, the per-row losses the
    reference attack needs, and — on the forget rows' answers — exact memorization and extraction
    strength. Returns ``(scores, forget row values, holdout records)``."""
    forget, holdout = _first(data.forget, config.limit), _first(data.holdout, config.limit)
    prompts = render_prompts(tokenizer, [question_text(r["question"], config.prompt_format, config.question_template) for r in forget + holdout], config.prompt_format)
    answers = [r["answer"] for r in forget + holdout]
    pairs = membership_sequences(tokenizer, prompts, answers, config.mia_tokens, eos=config.answer_eos)
    names = [f"forget row {i}" for i in range(len(forget))] + [f"holdout row {i}" for i in range(len(holdout))]
    check_fits_context(model, [ids for ids, _ in pairs], names, data.source)
    stats = sequence_token_stats(model, pairs, nll_options)
    # OpenUnlearning drops the last scored token (the appended EOS) wherever it reads single tokens
    read = [st.drop_last() if config.answer_eos else st for st in stats]
    attacks = ("min_k",) + tuple(a for a in config.mia_attacks if a != "min_k")
    grad = (sequence_grad_norm(model, pairs, drop_last=config.answer_eos, progress=progress, desc="tofu gradnorm")
            if "gradnorm" in attacks else [None] * len(pairs))
    scored = []
    for name, (ids, labels), full, part, g in zip(names, pairs, stats, read, grad):
        if not part.nll:
            raise AmnesiaError(f"{data.source}: {name}: no token to score for membership inference (an empty answer)")
        loss = membership.loss_score(full.nll)
        row = {"min_k_score": membership.min_k_score(part.nll, config.mink_k), "loss_score": loss}
        if "zlib" in attacks:
            text = tokenizer.decode([t for t in labels if t != IGNORE], skip_special_tokens=True)
            row["zlib_score"] = membership.zlib_score(loss, text)
        if "min_k++" in attacks:
            row["min_k_plus_plus_score"] = membership.min_k_plus_plus_score(part.nll, part.mu, part.sigma, config.mink_k)
        if "gradnorm" in attacks:
            row["gradnorm_score"] = g
        scored.append(row)
    members, nonmembers = scored[: len(forget)], scored[len(forget) :]
    mia: dict = {}
    for attack in attacks:
        column = ATTACK_COLUMNS[attack]
        mia[ATTACK_KEYS[attack]] = tm.membership_auc([s[column] for s in members], [s[column] for s in nonmembers])
    mia.update({
        "mia.attacks": list(attacks),
        "mia.k": config.mink_k,
        "mia.tokens": config.mia_tokens,
        "mia.forget_rows": len(members),
        "mia.holdout_rows": len(nonmembers),
        "mia.loss_scores": {"forget": [s["loss_score"] for s in members], "holdout": [s["loss_score"] for s in nonmembers]},
    })
    # exact memorization and extraction strength read the forget answers after their questions
    if config.mia_tokens == "answer":
        answer_stats = read[: len(forget)]
    else:
        answer_pairs = [completion_labels(tokenizer, q, a, eos=config.answer_eos) for q, a in zip(prompts[: len(forget)], answers[: len(forget)])]
        answer_stats = [st.drop_last() if config.answer_eos else st for st in sequence_token_stats(model, answer_pairs, nll_options)]
    for row, st in zip(members, answer_stats):
        row["exact_memorization"] = membership.exact_memorization(st.hit)
        row["extraction_strength"] = membership.extraction_strength(st.hit, openunlearning=config.es_openunlearning)
    holdout_records = [
        {**dict.fromkeys(PREDICTION_COLUMNS), "set": "holdout", "index": i, "question": r["question"], "answer": r["answer"], **s}
        for i, (r, s) in enumerate(zip(holdout, nonmembers))
    ]
    return mia, members, holdout_records


def run_tofu_evaluation(model, tokenizer, data: TofuData, config: TofuEvalConfig = TofuEvalConfig(), *, progress: bool = False) -> TofuEvaluation:
    """Score ``model`` on TOFU ``data`` (see the module docstring for what is measured); ``progress`` shows tqdm bars.

    ``scores`` holds, for each set ``forget``, ``retain``, ``real_authors``, ``world_facts``:
    ``<set>.probability``, ``<set>.rouge_l_recall``, ``<set>.rouge1_recall``,
    ``<set>.truth_ratio_score``, ``<set>.perturbed_probability``, ``<set>.perturbed_rouge_l_recall``,
    ``<set>.rows`` (forget and retain also ``<set>.paraphrased_probability`` and
    ``<set>.paraphrased_rouge_l_recall``); ``model_utility`` (the harmonic mean of the retain,
    real-author and world-fact values); ``forget.exact_memorization`` and
    ``forget.extraction_strength``; ``forget.truth_ratios`` (the paper's ``R_truth =
    geomean(P_pert) / P_para`` per forget row, OpenUnlearning's per-row value, what forget quality
    compares); ``mia.<attack>_auc`` for each attack (forget vs holdout, 1 = memorised) and
    ``mia.loss_scores``; ``conventions``; and the split, data, model, prompt format, generation
    details, warnings and config. No clock enters ``scores``.
    """
    start = time.time()
    config.check()
    where = f"{data.source} ({data.split})"
    rows = _eval_rows(data, config.limit)
    questions = [question_text(r["question"], config.prompt_format, config.question_template) for name in SETS for r in rows[name]]
    rendered = iter(render_prompts(tokenizer, questions, config.prompt_format))
    prompts = {name: [next(rendered) for _ in rows[name]] for name in SETS}
    keys, pairs = _qa_sequences(tokenizer, rows, prompts, eos=config.answer_eos)
    check_fits_context(model, [ids for ids, _ in pairs], [k.label() for k in keys], where)
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
    mia, members, holdout_records = _membership(model, tokenizer, data, config, NLLOptions(batch_size=config.batch_size, progress=progress, desc="tofu mia"),
                                                progress=progress)
    timings["mia_s"] = time.time() - t
    for record, member in zip(records["forget"], members):
        record.update(member)

    scores = _scores(model, data, config, records, mia, gen, tie)
    timings["total_s"] = time.time() - start
    predictions = [r for name in SETS for r in records[name]] + holdout_records
    return TofuEvaluation(scores=scores, predictions=predictions, timings={k: round(v, 3) for k, v in timings.items()})


def conventions(config: TofuEvalConfig) -> dict:
    """How the numbers were computed where TOFU implementations differ (scores.json ``conventions``):
    ``openunlearning`` is true when the answers, tokens and generation budget are OpenUnlearning's."""
    return {
        "answer_eos": config.answer_eos,  # in the mean NLLs; dropped from Min-K%, Min-K%++, gradnorm, exact memorization, extraction strength
        "max_new_tokens": config.max_new_tokens,
        "mia_tokens": config.mia_tokens,
        "extraction_strength": "openunlearning" if config.es_openunlearning else "definition",
        "openunlearning": config.answer_eos and config.max_new_tokens == DEFAULT_MAX_NEW_TOKENS and config.mia_tokens == "answer",
    }


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
                    "model": model_id(model), "prompt_format": config.prompt_format, "conventions": conventions(config)}
    for name in SETS:
        s = per_set[name]
        scores[f"{name}.probability"] = s.probability
        scores[f"{name}.rouge_l_recall"] = s.rouge_l_recall
        scores[f"{name}.rouge1_recall"] = _mean([r["rouge1_recall"] for r in records[name]])
        scores[f"{name}.truth_ratio_score"] = s.truth_ratio_score
        for sub in ("paraphrased_probability", "perturbed_probability", "paraphrased_rouge_l_recall", "perturbed_rouge_l_recall"):
            values = [r[sub] for r in records[name] if r[sub] is not None]
            if values:
                scores[f"{name}.{sub}"] = _mean(values)
        scores[f"{name}.rows"] = len(records[name])
    scores["model_utility"] = tm.model_utility(*(per_set[name] for name in UTILITY_SETS))
    for metric in ("exact_memorization", "extraction_strength"):
        values = [r[metric] for r in records["forget"] if r[metric] is not None]
        scores[f"forget.{metric}"] = _mean(values) if values else None
    scores["forget.truth_ratios"] = [r["truth_ratio"] for r in records["forget"]]
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
        if s.get("schema") != SCHEMA:
            raise AmnesiaError(f"{name}: schema {s.get('schema')!r}, expected {SCHEMA} (scores.json of this version: evaluate the model again)")
    for key in ("split", "mia.k", "mia.tokens", "mia.forget_rows", "mia.holdout_rows", "prompt_format"):
        if scores.get(key) != retain_scores.get(key):
            raise AmnesiaError(f"{key}: {scores.get(key)!r} in the scores but {retain_scores.get(key)!r} in the retain model's (expected the same)")
    if scores["conventions"]["answer_eos"] != retain_scores["conventions"]["answer_eos"]:
        raise AmnesiaError(f"conventions.answer_eos: {scores['conventions']['answer_eos']} in the scores but {retain_scores['conventions']['answer_eos']} "
                           "in the retain model's (expected the same: both answers scored with EOS, or both without)")
    if len(scores["forget.truth_ratios"]) != len(retain_scores["forget.truth_ratios"]):
        raise AmnesiaError(
            f"forget.truth_ratios: {len(scores['forget.truth_ratios'])} rows in the scores but {len(retain_scores['forget.truth_ratios'])} in the retain model's (expected the same rows)"
        )


def compare_to_retain(scores: dict, retain_scores: dict) -> dict:
    """Forget quality and privacy leak of a model against the retain model (trained without the forget set).

    Both arguments are :attr:`TofuEvaluation.scores` of the same split, rows and settings. Returns
    ``forget_quality`` (the KS-test p-value of the forget-set truth ratios, TOFU), ``ks_statistic``,
    ``privleak`` (Min-K%, MUSE / OpenUnlearning) and ``privleak_loss`` (loss attack), the retain
    model's AUCs ``retain_model.mia.min_k_auc`` / ``retain_model.mia.loss_auc``, and
    ``mia.reference_auc``: the reference attack (each row's loss minus the retain model's,
    OpenUnlearning ``ReferenceAttack`` with the retain model as the reference).
    """
    _check_comparable(scores, retain_scores)
    quality = tm.forget_quality(scores["forget.truth_ratios"], retain_scores["forget.truth_ratios"])
    own, ref = scores["mia.loss_scores"], retain_scores["mia.loss_scores"]
    return {
        "forget_quality": quality.p_value,
        "ks_statistic": quality.statistic,
        "privleak": tm.privleak(scores["mia.min_k_auc"], retain_scores["mia.min_k_auc"]),
        "privleak_loss": tm.privleak(scores["mia.loss_auc"], retain_scores["mia.loss_auc"]),
        "retain_model.mia.min_k_auc": retain_scores["mia.min_k_auc"],
        "retain_model.mia.loss_auc": retain_scores["mia.loss_auc"],
        "mia.reference_auc": tm.membership_auc([a - b for a, b in zip(own["forget"], ref["forget"])], [a - b for a, b in zip(own["holdout"], ref["holdout"])]),
    }


# --------------------------------------------------------------------------- files


def write_outputs(out, evaluation: TofuEvaluation, *, overwrite: bool = True) -> dict:
    """``predictions.csv`` (columns :data:`PREDICTION_COLUMNS`), ``timings.json`` and, last, ``scores.json`` into ``out``
    (:func:`unlearn.eval.report.write_outputs`, the SemEval evaluation's writer)."""
    from unlearn.eval.report import write_outputs as write

    return write(out, evaluation.scores, evaluation.predictions, overwrite=overwrite, timings=evaluation.timings, columns=PREDICTION_COLUMNS)
