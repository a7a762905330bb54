"""The MUSE evaluation of one model: C1 VerbMem, C2 KnowMem (forget), C4 KnowMem (retain) and C3
PrivLeak (:mod:`pipelines.muse.metrics` for the definitions), batched — the same numbers as MUSE's
one-row loops (tested).

* VerbMem: each ``verbmem`` prompt tokenized with special tokens, greedy for
  ``verbmem_max_new_tokens``, decoded skipping special tokens; the reference is the ``gt``
  tokenized with special tokens, cut to its first ``verbmem_max_new_tokens`` tokens (a BOS counts
  as one) and decoded the same way — MUSE's ``verbmem.eval``;
* KnowMem: :func:`~pipelines.muse.metrics.knowmem_prompt` per question, greedy for
  ``knowmem_max_new_tokens``, cut with :func:`~pipelines.muse.metrics.knowmem_answer`;
* PrivLeak: the NLL of every next token of each whole text (``tokenizer(text)``: special tokens
  added, nothing truncated — a text longer than the model's context is an error), Min-K% per
  text, the AUC of forget vs holdout, and PrivLeak against the retain model's AUC
  (:func:`compare_to_retain`) or, without one, MUSE's published ``AUC_RETRAIN`` of the corpus
  (said in ``privleak_reference``).

Generations go through :func:`unlearn.generation.generate` (batched, equal to one row at a time),
decoded as transformers 4's ``clean_up_tokenization_spaces=True`` did (``clean_up_spaces``), as
MUSE decodes; losses through :func:`unlearn.eval.nll.sequence_token_nll`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from tracing.errors import AmnesiaError
from unlearn.eval.core import tie_margin
from unlearn.eval.nll import NLLOptions, sequence_token_nll
from unlearn.generation import GenerationOptions, decode, generate
from unlearn.models import check_fits_context, model_id

from . import metrics as mm
from .config import AUC_RETRAIN, MuseEvalConfig
from .data import MuseData, corpus_of

SCHEMA = 1
KIND = "muse_scores"
PREDICTION_COLUMNS = ("set", "index", "prompt", "reference", "generated", "rouge_l_f1", "rouge_l_recall", "min_k_score")


@dataclass
class MuseEvaluation:
    """One MUSE evaluation: the scores dict, one record per scored row and wall times."""

    scores: dict
    predictions: list[dict]
    timings: dict = field(default_factory=dict)


def _first(rows, limit):
    return list(rows) if limit is None else list(rows[:limit])


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, config: MuseEvalConfig, progress: bool, desc: str):
    return generate(model, tokenizer, prompts, GenerationOptions(
        max_new_tokens=max_new_tokens, batch_size=config.generation_batch_size, clean_up_spaces=config.clean_up_spaces,
        tie_margin=tie_margin(model, config), progress=progress, desc=desc))


def verbmem_reference(tokenizer, gt: str, max_new_tokens: int, clean_up_spaces: bool = True) -> str:
    """The continuation VerbMem compares with: ``gt``'s first ``max_new_tokens`` tokens (special tokens counted), decoded."""
    return decode(tokenizer, tokenizer(gt, add_special_tokens=True)["input_ids"][:max_new_tokens], clean_up_spaces)


def corpus(data: MuseData, config: MuseEvalConfig) -> str | None:
    return config.corpus if config.corpus != "auto" else corpus_of(data.source)


def run_muse_evaluation(model, tokenizer, data: MuseData, config: MuseEvalConfig = MuseEvalConfig(), *, progress: bool = False,
                        privleak: bool = True) -> MuseEvaluation:
    """Score ``model`` on MUSE ``data`` (module docstring). ``scores``: ``verbmem_f``, ``knowmem_f``,
    ``knowmem_r`` (ROUGE-L F1 × 100; None where the corpus has no such QA), ``privleak_auc`` (MUSE's
    orientation), ``privleak`` against the published retrained AUC of the corpus (None when the corpus
    is unknown; :func:`compare_to_retain` gives it against a retain model), row counts, settings.
    ``privleak=False`` skips C3 (its scores are None, no rows): the audit's held-out VerbMem/KnowMem
    scoring reads no PrivLeak, which on MUSE's own rows is a forward pass over every whole article."""
    config.check()
    start = time.time()
    records: list[dict] = []
    timings: dict[str, float] = {}
    scores: dict = {"schema": SCHEMA, "kind": KIND, "benchmark": "MUSE", "data": data.source, "model": model_id(model),
                    "corpus": corpus(data, config)}

    t = time.time()
    verbmem = _first(data.verbmem, config.limit)
    gen = _generate(model, tokenizer, [r["prompt"] for r in verbmem], config.verbmem_max_new_tokens, config, progress, "muse verbmem")
    for i, (row, text) in enumerate(zip(verbmem, gen.texts)):
        reference = verbmem_reference(tokenizer, row["gt"], config.verbmem_max_new_tokens, config.clean_up_spaces)
        r = mm.rouge_l(reference, text)
        records.append({**dict.fromkeys(PREDICTION_COLUMNS), "set": "verbmem", "index": i, "prompt": row["prompt"], "reference": reference,
                        "generated": text, "rouge_l_f1": r["f1"], "rouge_l_recall": r["recall"]})
    scores["verbmem_f"] = mm.mean_percent([r["rouge_l_f1"] for r in records if r["set"] == "verbmem"])
    scores["verbmem_f.rows"] = len(verbmem)
    timings["verbmem_s"] = time.time() - t

    t = time.time()
    for key, qa, icl in (("knowmem_f", data.knowmem_forget, data.knowmem_forget_icl), ("knowmem_r", data.knowmem_retain, data.knowmem_retain_icl)):
        if qa is None:
            scores[key], scores[f"{key}.rows"] = None, 0
            continue
        rows = _first(qa, config.limit)
        prompts = [mm.knowmem_prompt(r["question"], icl) for r in rows]
        gen = _generate(model, tokenizer, prompts, config.knowmem_max_new_tokens, config, progress, f"muse {key}")
        name = "knowmem_forget" if key == "knowmem_f" else "knowmem_retain"
        for i, (row, prompt, text) in enumerate(zip(rows, prompts, gen.texts)):
            answer = mm.knowmem_answer(text)
            r = mm.rouge_l(row["answer"], answer)
            records.append({**dict.fromkeys(PREDICTION_COLUMNS), "set": name, "index": i, "prompt": prompt, "reference": row["answer"],
                            "generated": answer, "rouge_l_f1": r["f1"], "rouge_l_recall": r["recall"]})
        scores[key] = mm.mean_percent([r["rouge_l_f1"] for r in records if r["set"] == name])
        scores[f"{key}.rows"] = len(rows)
    timings["knowmem_s"] = time.time() - t

    if not privleak:
        scores.update({"privleak_auc": None, "privleak.forget_rows": 0, "privleak.holdout_rows": 0, "privleak": None,
                       "privleak_reference": "not computed (privleak=False)"})
        return _finish(scores, records, timings, config, start)
    t = time.time()
    forget, holdout = _first(data.privleak_forget, config.limit), _first(data.privleak_holdout, config.limit)
    texts = forget + holdout
    ids = [tokenizer(text)["input_ids"] for text in texts]
    names = [f"privleak/forget.json item {i}" for i in range(len(forget))] + [f"privleak/holdout.json item {i}" for i in range(len(holdout))]
    check_fits_context(model, ids, names, data.source, why=": MUSE scores whole texts, untruncated")
    tokens = sequence_token_nll(model, [(row, list(row)) for row in ids], NLLOptions(batch_size=config.batch_size, progress=progress, desc="muse privleak"))
    mink = [mm.privleak_score(nll, config.mink_k) for nll in tokens]
    for i, (text, score) in enumerate(zip(texts, mink)):
        part = "privleak_forget" if i < len(forget) else "privleak_holdout"
        records.append({**dict.fromkeys(PREDICTION_COLUMNS), "set": part, "index": i if i < len(forget) else i - len(forget),
                        "prompt": text[:200], "min_k_score": score})
    scores["privleak_auc"] = mm.privleak_auc(mink[: len(forget)], mink[len(forget):])
    scores["privleak.forget_rows"], scores["privleak.holdout_rows"] = len(forget), len(holdout)
    reference = AUC_RETRAIN.get(scores["corpus"]) if scores["corpus"] else None
    scores["privleak"] = mm.privleak(scores["privleak_auc"], reference) if reference is not None else None
    scores["privleak_reference"] = (f"MUSE's published AUC of its retrained {scores['corpus']} model, {reference}" if reference is not None
                                    else "none: the corpus is unknown (set corpus, or compare with a retain model)")
    timings["privleak_s"] = time.time() - t
    return _finish(scores, records, timings, config, start)


def _finish(scores: dict, records: list[dict], timings: dict, config: MuseEvalConfig, start: float) -> MuseEvaluation:
    scores["warnings"] = [f"limit {config.limit}: only the first {config.limit} rows of each set were scored; the numbers are not the benchmark's"] if config.limit else []
    scores["config"] = asdict(config)
    timings["total_s"] = time.time() - start
    return MuseEvaluation(scores=scores, predictions=records, timings={k: round(v, 3) for k, v in timings.items()})


def compare_to_retain(scores: dict, retain_scores: dict) -> dict:
    """PrivLeak of a model against the retain (retrained) model's AUC on the same rows: ``privleak``,
    ``retain_model.privleak_auc``; and each KnowMem/VerbMem beside the retain model's (its floor)."""
    for name, s in (("scores", scores), ("retain model's scores", retain_scores)):
        if s.get("kind") != KIND:
            raise AmnesiaError(f"{name}: kind {s.get('kind')!r}, expected {KIND!r} (a MUSE evaluation)")
    for key in ("privleak.forget_rows", "privleak.holdout_rows", "verbmem_f.rows", "knowmem_f.rows", "knowmem_r.rows"):
        if scores.get(key) != retain_scores.get(key):
            raise AmnesiaError(f"{key}: {scores.get(key)!r} in the scores but {retain_scores.get(key)!r} in the retain model's (expected the same rows)")
    return {"privleak": mm.privleak(scores["privleak_auc"], retain_scores["privleak_auc"]), "retain_model.privleak_auc": retain_scores["privleak_auc"],
            **{f"retain_model.{k}": retain_scores.get(k) for k in ("verbmem_f", "knowmem_f", "knowmem_r")}}


def write_outputs(out, evaluation: MuseEvaluation, *, overwrite: bool = True) -> dict:
    """``predictions.csv``, ``timings.json`` and, last, ``scores.json`` into ``out`` (the shared writer)."""
    from unlearn.eval.report import write_outputs as write

    return write(out, evaluation.scores, evaluation.predictions, overwrite=overwrite, timings=evaluation.timings, columns=PREDICTION_COLUMNS)
