"""SemEval's side of the audit (:mod:`unlearn.audit`): its forget and retain metrics on a model,
the rows each relearning attack trains on, and the facts the logit lens reads.

The scored rows are the evaluation's (``evaluate.splits``: the rows the request names); the
metrics are the official definitions — knowledge (exact match of the QA answers), regurgitation
(ROUGE-L recall of the sentence completions) on the forget and the retain rows, and the loss
attack's membership AUC of the forget documents against never-seen ones (shown, and recovered,
but not in the worst case: that is the knowledge metrics') — with generation capped
at the longest expected answer + 8 tokens (as validation during unlearning; recovery compares
the audit's own measurements, so the cap is the same for all three models).

* relearn_forget trains on the forget rows of half the people (rows grouped by the id without its
  ``sc1``/``qa0`` suffix, a seeded half) and is scored on the other half;
* relearn_retain trains on the retain rows of the other part (validation when the train rows are
  scored), which the audit does not score;
* relearn_related trains on ``mia_data/validation/nonmember.jsonl``: biographies of people
  nobody trained on, of the same kind, not scored (the test's membership documents are
  ``mia_data/``).

The probes change the forget prompts, not the weights: ``paraphrase`` re-words each forget
question with one of :data:`PARAPHRASES` (knowledge only: the sentence completions are not
questions), ``context`` puts :data:`CONTEXT_SHOTS` QA rows of people the audit does not score
(the retain rows of the other part; fewer when the model's context has no room for them, none
fitting: not measured) before each forget prompt. Knowledge stays the official exact
match, so an answer followed by more text does not count.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from tracing.errors import AmnesiaError
from unlearn.audit import HELD_OUT, AuditTask
from unlearn.eval.config import EvalConfig

FORGET = ("forget knowledge", "forget regurgitation", "MIA AUC")
#: The paraphrase probe's re-wordings of a forget question (one per row, in turn).
PARAPHRASES = ("Question: {q}\nAnswer:", "Answer this question about a person. {q}", "{q} Reply with the answer only.")
CONTEXT_SHOTS = 3  #: the context probe: other people's QA rows before each forget prompt
RETAIN = ("retain knowledge", "retain regurgitation")


def is_question(row: dict) -> bool:
    """A QA row (id ``…qa<digit>``), as the official metrics tell them from sentence completions."""
    return re.search(r"qa\d+$", row["id"]) is not None


def person(row_id: str) -> str:
    """The id of the document a row belongs to: the row id without its ``sc1``/``qa0`` suffix."""
    return re.sub(r"(sc|qa)\d+$", "", row_id)


class SemEvalAudit(AuditTask):
    benchmark = "semeval"
    forget_metrics = FORGET
    retain_metrics = RETAIN
    worst_case_metrics = FORGET[:2]  # the knowledge the rows hold; the membership AUC is shown beside it

    def __init__(self, data: str | Path, evaluate: EvalConfig = EvalConfig(), seed: int = 0):
        import dataclasses

        from unlearn.eval.core import prepare

        plan = prepare(data, dataclasses.replace(evaluate, mmlu="off", limit=None))
        self.data, self.fmt = plan.data, evaluate.prompt_format
        self.forget = [r for r in plan.rows if r["split"] == "forget"]
        self.retain = [r for r in plan.rows if r["split"] == "retain"]
        people = sorted({person(r["id"]) for r in self.forget})
        if len(people) < 2:
            raise AmnesiaError(f"{plan.data.source}: the audit's relearn_forget needs forget rows of at least two people (documents), found {len(people)}")
        random.Random(f"audit-{seed}").shuffle(people)
        trained = set(people[: len(people) // 2])
        self.forget_train = [r for r in self.forget if person(r["id"]) in trained]
        self.forget_held_out = [r for r in self.forget if person(r["id"]) not in trained]
        self.members = list(plan.mia_docs["member"]["document"]) if plan.mia_docs else []
        self.nonmembers = list(plan.mia_docs["nonmember"]["document"]) if plan.mia_docs else []
        other = "validation" if plan.part == "train" else "train"
        self.retain_other = ([{"id": r["id"], "input": r["input"], "expected_output": r["output"]} for r in plan.data.get("retain", other)]
                             if f"retain_{other}" in plan.data.splits else [])
        related = plan.data.mia_validation.get("nonmember")
        self.related = list(related["document"]) if related is not None else []
        self.part, self.seed = plan.part, seed

    def rows(self, part: str, probe: str | None = None, shots: int = CONTEXT_SHOTS) -> list[dict]:
        forget = self.forget_held_out if part == HELD_OUT else self.forget
        if probe == "paraphrase":
            forget = [{**r, "input": PARAPHRASES[i % len(PARAPHRASES)].format(q=r["input"].strip())} if is_question(r) else r for i, r in enumerate(forget)]
        elif probe == "context":
            prefix = self.context_prefix(shots)
            forget = [{**r, "input": prefix + r["input"]} for r in forget]
        elif probe is not None:
            raise AmnesiaError(f"audit probe {probe!r}: expected paraphrase or context")
        return forget + self.retain

    def context_shots(self) -> list[str]:
        """The context probe's shots: up to :data:`CONTEXT_SHOTS` QA rows of people the audit does not score, each its input, answer and a newline."""
        shots = [f"{r['input']}{r['expected_output']}\n" for r in self.retain_other if is_question(r)][:CONTEXT_SHOTS]
        if not shots:
            raise AmnesiaError(f"{self.data.source}: the audit's context probe puts retain QA rows it does not score before each forget prompt: "
                               f"expected a retain_{'validation' if self.part == 'train' else 'train'} split with QA rows")
        return shots

    def context_prefix(self, shots: int = CONTEXT_SHOTS) -> str:
        """The first ``shots`` of :meth:`context_shots`, joined."""
        return "".join(self.context_shots()[:shots])

    def score(self, model, tokenizer, part: str = "all", probe: str | None = None) -> dict:
        from unlearn.eval.validation import ValidationSet, score_validation

        shots = CONTEXT_SHOTS
        if probe == "context":  # as many shots as leave room for the longest forget row in the model's context
            from unlearn.audit.core import shots_that_fit
            from unlearn.models import context_length
            from unlearn.prompts import render_prompts

            forget = self.forget_held_out if part == HELD_OUT else self.forget
            shots = shots_that_fit(tokenizer, self.context_shots(), render_prompts(tokenizer, [r["input"] for r in forget], self.fmt),
                                   [r["expected_output"] for r in forget], context_length(model))
            if shots == 0:
                return {m: None for m in FORGET + RETAIN}
        mia = part != HELD_OUT and probe is None and bool(self.members) and bool(self.nonmembers)
        vs = ValidationSet(rows=self.rows(part, probe, shots), members=self.members if mia else [], nonmembers=self.nonmembers if mia else [], prompt_format=self.fmt)
        s = score_validation(model, tokenizer, vs)
        return {"forget knowledge": s["forget_knowledge"], "forget regurgitation": None if probe == "paraphrase" else s["forget_regurgitation"],
                "MIA AUC": s.get("mia_auc"), "retain knowledge": s["retain_knowledge"], "retain regurgitation": s["retain_regurgitation"]}

    def _pairs(self, tokenizer, rows: list[dict]) -> list[tuple[str, str]]:
        from unlearn.prompts import render_prompts

        return list(zip(render_prompts(tokenizer, [r["input"] for r in rows], self.fmt), [r["expected_output"] for r in rows]))

    def scored_pairs(self, tokenizer, part: str = "all") -> list[tuple[str, str]]:
        """The rows whose metrics the audit reads (and the membership documents), rendered."""
        docs = [("", d) for d in self.members + self.nonmembers] if part != HELD_OUT else []
        return self._pairs(tokenizer, self.rows(part)) + docs

    def relearn_pool(self, tokenizer, attack: str) -> list[tuple[str, str]]:
        if attack == "relearn_forget":
            return self._pairs(tokenizer, self.forget_train)
        if attack == "relearn_retain":
            if not self.retain_other:
                raise AmnesiaError(f"{self.data.source}: the audit's relearn_retain trains on retain rows it does not score: "
                                   f"expected a retain_{'validation' if self.part == 'train' else 'train'} split")
            return self._pairs(tokenizer, self.retain_other)
        if not self.related:
            raise AmnesiaError(f"{self.data.source}: the audit's relearn_related trains on never-seen biographies: expected mia_data/validation/nonmember.jsonl")
        return [("", d) for d in self.related]

    def lens_facts(self, tokenizer) -> list[tuple[str, str]]:
        qa = [r for r in self.forget if is_question(r)] or self.forget
        return self._pairs(tokenizer, qa)

    def describe(self) -> dict:
        return {"scored_part": self.part, "forget": len(self.forget), "retain": len(self.retain), "forget_relearned": len(self.forget_train),
                "forget_held_out": len(self.forget_held_out), "members": len(self.members), "nonmembers": len(self.nonmembers),
                "retain_relearn_pool": len(self.retain_other), "related_pool": len(self.related)}
