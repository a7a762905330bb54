"""A cheap validation score of the official metrics, for checkpoint selection during unlearning.

:func:`validation_set` takes the *validation* part of SemEval-layout data — a seeded subset of
``forget_validation`` and ``retain_validation`` rows and the documents of
``mia_data/validation/`` — and never the test MIA files (``mia_data/member.jsonl`` /
``nonmember.jsonl``). :func:`score_validation` measures on it what the final score measures:

* knowledge (exact match) and regurgitation (ROUGE-L recall) per split and task, with the
  official functions of :mod:`unlearn.eval.metrics`, from greedy generations cut at the longest
  expected answer + a margin (recall and exact match need no more tokens than that);
* the harmonic-mean task aggregate;
* the membership-inference AUC of the validation members against the validation non-members,
  and its score ``1 − 2·|AUC − 0.5|``. By default the SemEval test's own attack: each document's
  mean token NLL (``mia_attack="loss"``, ``mia_tokens="document"``). A benchmark whose privacy
  test ranks something else validates on that instead: TOFU's privleak ranks Min-K% Prob
  (k = 0.4) of the answer tokens, so its runs set ``mia_attack="min_k"``, ``mia_tokens="answer"``
  (the documents then carry a ``prompt`` field; the tokens after it are scored). On the TOFU demo
  the two statistics disagree where it matters: a checkpoint at loss AUC 0.49 had Min-K% AUC 0.24
  on the same rows — forgotten past never-seen text in the tokens privleak looks at;
* ``final``: the mean of the task aggregate and the MIA score — the official final score without
  its MMLU term, which unlearning a few layers moves least and which is too slow to run every
  few steps (it would add the same constant to every step anyway).

The forget-validation rows are part of the unlearning request (their documents are the
validation members), so their scores move with training as the test rows' do.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from ..data import SemEvalData
from ..generation import GenerationOptions, generate
from ..prompts import render_prompts
from . import metrics
from .config import DEFAULT_MINK_K
from .core import measure_mia
from .nll import NLLOptions, membership_sequences, sequence_token_nll

ANSWER_MARGIN = 8  # tokens generated past the longest expected answer


@dataclass(frozen=True)
class ValidationSet:
    """Rows and documents one validation pass scores."""

    rows: list[dict]
    members: list[str] = field(default_factory=list)
    nonmembers: list[str] = field(default_factory=list)
    prompt_format: str = "raw"
    source: str = ""
    member_prompts: list[str] | None = None
    nonmember_prompts: list[str] | None = None
    mia_attack: str = "loss"
    mia_tokens: str = "document"

    @property
    def has_mia(self) -> bool:
        return bool(self.members) and bool(self.nonmembers)

    def describe(self) -> str:
        n = {k: sum(r["split"] == k for r in self.rows) for k in ("forget", "retain")}
        mia = f", MIA {len(self.members)} members / {len(self.nonmembers)} non-members" if self.has_mia else ", no validation MIA documents"
        return f"{n['forget']} forget + {n['retain']} retain validation rows{mia}"


def _subset(ds, kind: str, budget: int | None, seed: int) -> list[dict]:
    index = list(range(len(ds)))
    if budget is not None and budget < len(index):
        index = sorted(random.Random(f"{seed}-{kind}").sample(index, budget))
    return [{"id": ds[i]["id"], "task": ds[i]["task"], "split": kind, "input": ds[i]["input"], "expected_output": ds[i]["output"]} for i in index]


def validation_set(data: SemEvalData, *, rows: int | None = 64, seed: int = 0, prompt_format: str = "raw",
                   mia_attack: str = "loss", mia_tokens: str = "document") -> ValidationSet:
    """A seeded subset of ``rows`` forget- and ``rows`` retain-validation rows plus the validation MIA documents
    (scored with ``mia_attack`` on ``mia_tokens``; see the module docstring)."""
    missing = [f"{k}_validation" for k in ("forget", "retain") if f"{k}_validation" not in data.splits]
    if missing:
        raise AmnesiaError(f"{data.source}: no {' or '.join(missing)} split: validation during unlearning (--eval-steps) needs both")
    picked = _subset(data.get("forget", "validation"), "forget", rows, seed) + _subset(data.get("retain", "validation"), "retain", rows, seed)
    mia = data.mia_validation
    prompts = {}
    if mia and mia_tokens == "answer":
        for name in ("member", "nonmember"):
            if "prompt" not in mia[name].column_names:
                raise AmnesiaError(f"{data.source}: mia_data/validation/{name}.jsonl has no 'prompt' field: "
                                   "validation_mia_tokens answer scores the tokens after each document's prompt (or use document)")
            prompts[name] = list(mia[name]["prompt"])
    return ValidationSet(
        rows=picked,
        members=list(mia["member"]["document"]) if mia else [],
        nonmembers=list(mia["nonmember"]["document"]) if mia else [],
        prompt_format=prompt_format,
        source=str(data.source),
        member_prompts=prompts.get("member"),
        nonmember_prompts=prompts.get("nonmember"),
        mia_attack=mia_attack,
        mia_tokens=mia_tokens,
    )


def unlearning_validation_set(data: SemEvalData, config) -> ValidationSet:
    """The validation set an unlearning with ``config`` (an :class:`~unlearn.config.UnlearnConfig`)
    scores: its ``eval_rows``, ``seed``, ``prompt_format`` and validation membership attack."""
    return validation_set(data, rows=config.eval_rows, seed=config.seed, prompt_format=config.prompt_format,
                          mia_attack=config.validation_mia, mia_tokens=config.validation_mia_tokens)


def _membership(model, tokenizer, vs: ValidationSet, options: NLLOptions) -> dict:
    """The validation membership test with ``vs.mia_attack`` on ``vs.mia_tokens``; keys as :func:`measure_mia`'s."""
    if vs.mia_attack == "loss" and vs.mia_tokens == "document":
        return measure_mia(model, tokenizer, vs.members, vs.nonmembers, options)

    def sequences(documents: list[str], prompts: list[str] | None):
        prompts = prompts if vs.mia_tokens == "answer" else [""] * len(documents)
        return membership_sequences(tokenizer, prompts, [d[len(p):] for p, d in zip(prompts, documents)], vs.mia_tokens)

    def statistic(values: list[float]) -> float:
        return metrics.min_k_score(values, DEFAULT_MINK_K) if vs.mia_attack == "min_k" else metrics.loss_score(values)

    member = [statistic(v) for v in sequence_token_nll(model, sequences(vs.members, vs.member_prompts), options)]
    nonmember = [statistic(v) for v in sequence_token_nll(model, sequences(vs.nonmembers, vs.nonmember_prompts), options)]
    auc = metrics.mia_auc(member, nonmember)
    return {"auc": auc, "score": metrics.mia_score(auc), "member_mean_nll": sum(member) / len(member), "nonmember_mean_nll": sum(nonmember) / len(nonmember)}


def score_validation(model, tokenizer, vs: ValidationSet, *, batch_size: int | None = None) -> dict:
    """The validation scores of ``model`` now (eval mode, no gradient); see the module docstring."""
    was_training = model.training
    model.eval()
    try:
        prompts = render_prompts(tokenizer, [r["input"] for r in vs.rows], vs.prompt_format)
        longest = max(len(tokenizer(r["expected_output"], add_special_tokens=False)["input_ids"]) for r in vs.rows)
        gen = generate(model, tokenizer, prompts, GenerationOptions(max_new_tokens=longest + ANSWER_MARGIN, batch_size=batch_size, clean_up_spaces=True))
        scored = []
        for row, text in zip(vs.rows, gen.texts):
            s = metrics.score_row(row["id"], row["expected_output"], text)
            scored.append({**row, "regurgitation": s.regurgitation, "knowledge": s.knowledge})
        per_split, _, _, task = metrics.task_scores(scored)
        out = {
            "forget_knowledge": per_split["forget"]["overall-knowledge-score"],
            "forget_regurgitation": per_split["forget"]["overall-regurgitation-score"],
            "retain_knowledge": per_split["retain"]["overall-knowledge-score"],
            "retain_regurgitation": per_split["retain"]["overall-regurgitation-score"],
            "task": task,
        }
        if vs.has_mia:
            try:
                mia = _membership(model, tokenizer, vs, NLLOptions(batch_size=batch_size))
            except AmnesiaError:  # a non-finite NLL (a diverging step): no AUC, a score of 0
                mia = {"auc": None, "score": 0.0, "member_mean_nll": None, "nonmember_mean_nll": None}
            out.update({"mia_auc": mia["auc"], "mia_score": mia["score"], "member_nll": mia["member_mean_nll"], "nonmember_nll": mia["nonmember_mean_nll"]})
            out["final"] = (task + out["mia_score"]) / 2 if task is not None else None
        else:
            out["final"] = task
        return out
    finally:
        model.train(was_training)


def selection_value(scores: dict, select_by: str) -> float:
    """The number checkpoint selection maximizes (``final``, ``mia``, ``task``, or ``forgotten``: the
    forget knowledge, negated); a missing one is −∞ (the first best step is kept on ties)."""
    key = {"final": "final", "mia": "mia_score", "task": "task", "forgotten": "forget_knowledge"}[select_by]
    value = scores.get(key)
    if value is None:
        return -math.inf
    return -float(value) if select_by == "forgotten" else float(value)
