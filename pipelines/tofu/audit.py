"""TOFU's side of the audit (:mod:`unlearn.audit`): TOFU's forget and retain metrics on a model,
the rows each relearning attack trains on, and the facts the logit lens reads.

The metrics are :mod:`pipelines.tofu.evaluation`'s, on the run's TOFU rows with its evaluation
settings: forget Prob., forget ROUGE-L, the forget truth-ratio score, forget quality (log10 of
the KS-test p-value against the retain model's forget truth ratios: the retain model's own
scores from the run, on the same rows) and the Min-K% membership AUC of forget vs holdout
(shown, not in the worst case); retain Prob., retain ROUGE-L and model utility beside them.

* relearn_forget trains on the forget rows of half the forget authors (a seeded half) and is
  scored on the other half's rows (forget quality against the retain model's truth ratios of the
  same rows; none when ``evaluate.limit`` left the retain model's scores without them);
* relearn_retain trains on the retain rows — which TOFU's utility set (``retain_perturbed``)
  also scores: its retain columns read rows it trained on, its forget columns do not;
* relearn_related trains on never-seen TOFU authors that are not the privacy test's holdout
  (:func:`pipelines.tofu.data.reference_holdout`: the rows validation already reads).

The probes change the forget questions, not the weights: ``paraphrase`` asks TOFU's own
``paraphrased_question`` of each forget row, ``context`` puts up to :data:`CONTEXT_SHOTS` of the
shortest retain QA pairs before each forget question (as many as leave room in the model's
context for the longest scored answer and the generation budget; none fit: not measured). Forget quality and the membership AUC are not read under a
probe (the retain model's truth ratios are for the original questions).
"""

from __future__ import annotations

import dataclasses
import math
import random

from tracing.errors import AmnesiaError
from unlearn.audit import HELD_OUT, AuditTask

from .config import TofuEvalConfig
from .data import ROWS_PER_AUTHOR, TofuData, question_text, reference_holdout

FORGET = ("forget Prob.", "forget ROUGE-L", "forget truth ratio", "forget quality (log10)", "MIA AUC (Min-K%)")
RETAIN = ("retain Prob.", "retain ROUGE-L", "model utility")
CONTEXT_SHOTS = 3  #: the context probe: retain QA pairs before each forget question


class TofuAudit(AuditTask):
    benchmark = "tofu"
    forget_metrics = FORGET
    retain_metrics = RETAIN
    worst_case_metrics = FORGET[:4]

    def __init__(self, data: TofuData, evaluate: TofuEvalConfig, retain_scores: dict, seed: int = 0):
        self.data, self.config, self.retain_truth = data, evaluate, retain_scores["forget.truth_ratios"]
        n_authors = len(data.forget) // ROWS_PER_AUTHOR
        if n_authors < 2:
            raise AmnesiaError(f"{data.source} ({data.split}): the audit's relearn_forget needs at least two forget authors, found {n_authors}")
        blocks = list(range(n_authors))
        random.Random(f"audit-{seed}").shuffle(blocks)
        self.trained = sorted(blocks[: n_authors // 2])
        self.held_rows = [i for i in range(len(data.forget_perturbed)) if i // ROWS_PER_AUTHOR not in self.trained]
        held = set(self.held_rows)
        self.held_out = dataclasses.replace(data, forget_perturbed=[r for i, r in enumerate(data.forget_perturbed) if i in held],
                                            forget=[r for i, r in enumerate(data.forget) if i // ROWS_PER_AUTHOR not in self.trained])
        reference = reference_holdout(data)
        self.related = reference[0] if reference else []
        self.seed = seed

    def probed(self, data: TofuData, probe: str | None, shots: int = CONTEXT_SHOTS) -> TofuData:
        """``data`` with its forget questions changed by ``probe`` (``context``: the first ``shots`` of :meth:`context_shots`)."""
        if probe is None:
            return data
        if probe == "paraphrase":
            if any("paraphrased_question" not in r for r in data.forget_perturbed):
                raise AmnesiaError(f"{data.source} ({data.split}): the audit's paraphrase probe asks each forget row's paraphrased_question; the perturbed forget file has none")
            return dataclasses.replace(data, forget_perturbed=[{**r, "question": r["paraphrased_question"]} for r in data.forget_perturbed])
        if probe == "context":
            prefix = "".join(self.context_shots()[:shots])
            return dataclasses.replace(data, forget_perturbed=[{**r, "question": prefix + r["question"]} for r in data.forget_perturbed])
        raise AmnesiaError(f"audit probe {probe!r}: expected paraphrase or context")

    def context_shots(self) -> list[str]:
        """The context probe's QA pairs: the shortest retain rows, question and answer as the prompt shows them."""
        rows = sorted(self.data.retain, key=lambda r: len(r["question"]) + len(r["answer"]))[:CONTEXT_SHOTS]
        return [f"{r['question']}\n{r['answer']}\n\n" for r in rows]

    def score(self, model, tokenizer, part: str = "all", probe: str | None = None) -> dict:
        from unlearn.audit.core import shots_that_fit
        from unlearn.models import context_length

        from .evaluation import run_tofu_evaluation
        from .metrics import forget_quality

        held = part == HELD_OUT
        data = self.held_out if held else self.data
        shots = CONTEXT_SHOTS
        if probe == "context":  # as many shots as leave room for the longest scored answer in the model's context
            rows = data.forget_perturbed
            longest = [max([r["answer"], r.get("paraphrased_answer") or "", *(r.get("perturbed_answer") or [])], key=len) for r in rows]
            prompts = [question_text(r["question"], self.config.prompt_format, self.config.question_template) for r in rows]
            shots = shots_that_fit(tokenizer, self.context_shots(), prompts, longest, context_length(model), margin=self.config.max_new_tokens)
            if shots == 0:
                return {m: None for m in FORGET + RETAIN}
        s = run_tofu_evaluation(model, tokenizer, self.probed(data, probe, shots), self.config).scores
        rows = self.held_rows[: len(s["forget.truth_ratios"])] if held else range(len(s["forget.truth_ratios"]))  # evaluate.limit cuts both
        quality = None
        if probe is None and rows and max(rows) < len(self.retain_truth):  # the retain model's truth ratios of the same rows
            p_value = forget_quality(s["forget.truth_ratios"], [self.retain_truth[i] for i in rows]).p_value
            quality = math.log10(max(p_value, 1e-300))
        return {"forget Prob.": s["forget.probability"], "forget ROUGE-L": s["forget.rouge_l_recall"], "forget truth ratio": s["forget.truth_ratio_score"],
                "forget quality (log10)": quality, "MIA AUC (Min-K%)": None if held or probe else s["mia.min_k_auc"],
                "retain Prob.": s["retain.probability"], "retain ROUGE-L": s["retain.rouge_l_recall"], "model utility": s["model_utility"]}

    def _pairs(self, tokenizer, rows: list[dict]) -> list[tuple[str, str]]:
        from unlearn.prompts import render_prompts

        prompts = [question_text(r["question"], self.config.prompt_format, self.config.question_template) for r in rows]
        return list(zip(render_prompts(tokenizer, prompts, self.config.prompt_format), [r["answer"] for r in rows]))

    def scored_pairs(self, tokenizer, part: str = "all") -> list[tuple[str, str]]:
        """The rows the forget metrics read: the (held-out) forget rows, and the privacy test's holdout."""
        data = self.held_out if part == HELD_OUT else self.data
        return self._pairs(tokenizer, data.forget_perturbed) + ([] if part == HELD_OUT else self._pairs(tokenizer, data.holdout))

    def relearn_pool(self, tokenizer, attack: str) -> list[tuple[str, str]]:
        if attack == "relearn_forget":
            return self._pairs(tokenizer, [r for i, r in enumerate(self.data.forget) if i // ROWS_PER_AUTHOR in self.trained])
        if attack == "relearn_retain":
            return self._pairs(tokenizer, self.data.retain)
        if not self.related:
            raise AmnesiaError(f"{self.data.source} ({self.data.split}): the audit's relearn_related trains on never-seen authors: "
                               "expected the next larger holdout file (holdout05.json for forget01, holdout10.json for forget05)")
        return self._pairs(tokenizer, self.related)

    def lens_facts(self, tokenizer) -> list[tuple[str, str]]:
        return self._pairs(tokenizer, self.data.forget)

    def describe(self) -> dict:
        return {"split": self.data.split, "forget": len(self.data.forget), "forget_relearned_authors": len(self.trained),
                "forget_held_out_rows": len(self.held_rows), "holdout": len(self.data.holdout), "retain_relearn_pool": len(self.data.retain),
                "related_pool": len(self.related)}
