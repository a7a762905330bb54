"""MUSE's side of the audit (:mod:`unlearn.audit`): MUSE's forget and retain metrics on a model,
the rows each relearning attack trains on, and the facts the logit lens reads.

The metrics are :mod:`pipelines.muse.evaluation`'s with the run's settings, on the rows the run
scores: VerbMem and KnowMem on forget (recovered; the worst case), the PrivLeak membership AUC of
forget vs never-seen documents (MUSE's orientation: about 0 = the forget documents look like
members; recovered and shown, not in the worst case), KnowMem on retain beside them.

* relearn_forget trains on a seeded half of the forget documents (prompt → continuation) and of
  the forget KnowMem prompts, and is scored on the other half's VerbMem and KnowMem rows;
* relearn_retain trains on the retain documents and retain KnowMem prompts — which KnowMem on
  retain also scores: its retain column reads rows it trained on, its forget columns do not;
* relearn_related trains on the never-seen reference documents (what calibration reads: never
  the PrivLeak holdout, which the audit scores).

MUSE has no paraphrased questions, and its KnowMem prompts already carry in-context examples:
the probes are not measured for MUSE (None).
"""

from __future__ import annotations

import dataclasses
import random

from tracing.errors import AmnesiaError
from unlearn.audit import HELD_OUT, AuditTask

from .config import MuseEvalConfig
from .data import MuseData
from .metrics import knowmem_prompt

FORGET = ("VerbMem forget", "KnowMem forget", "PrivLeak AUC")
RETAIN = ("KnowMem retain",)


class MuseAudit(AuditTask):
    benchmark = "muse"
    forget_metrics = FORGET
    retain_metrics = RETAIN
    worst_case_metrics = FORGET[:2]

    def __init__(self, data: MuseData, rows, evaluate: MuseEvalConfig, *, prompt_words: int = 32, seed: int = 0):
        """``data``: what the run scores (MUSE's layout); ``rows``: the run's :class:`~pipelines.muse.pipeline.MuseRows`;
        ``prompt_words``: the words of a reference document relearn_related reads as its prompt."""
        self.data, self.rows, self.config, self.seed, self.prompt_words = data, rows, evaluate, seed, prompt_words
        n_verbmem, n_qa = len(data.verbmem), len(data.knowmem_forget or [])
        if n_verbmem < 2:
            raise AmnesiaError(f"{data.source}: the audit's relearn_forget needs at least two VerbMem rows, found {n_verbmem}")
        rng = random.Random(f"audit-{seed}")
        self.trained_verbmem = sorted(rng.sample(range(n_verbmem), n_verbmem // 2))
        self.trained_qa = sorted(rng.sample(range(n_qa), n_qa // 2))
        held_v = [i for i in range(n_verbmem) if i not in self.trained_verbmem]
        held_q = [i for i in range(n_qa) if i not in self.trained_qa]
        self.held_out = dataclasses.replace(data, verbmem=[data.verbmem[i] for i in held_v],
                                            knowmem_forget=[data.knowmem_forget[i] for i in held_q] if data.knowmem_forget else data.knowmem_forget)

    def score(self, model, tokenizer, part: str = "all", probe: str | None = None) -> dict:
        from .evaluation import run_muse_evaluation

        if probe is not None:
            return {m: None for m in FORGET + RETAIN}
        held = part == HELD_OUT
        s = run_muse_evaluation(model, tokenizer, self.held_out if held else self.data, self.config, privleak=not held).scores
        return {"VerbMem forget": s["verbmem_f"], "KnowMem forget": s["knowmem_f"], "PrivLeak AUC": None if held else s["privleak_auc"],
                "KnowMem retain": s["knowmem_r"]}

    @staticmethod
    def _qa_pairs(questions: list[dict], icl: list[dict]) -> list[tuple[str, str]]:
        """Each KnowMem question's prompt (after the in-context examples) and its answer."""
        return [(knowmem_prompt(r["question"], icl), r["answer"]) for r in questions]

    def _forget_pairs(self, data: MuseData) -> list[tuple[str, str]]:
        return [(r["prompt"], r["gt"]) for r in data.verbmem] + self._qa_pairs(data.knowmem_forget or [], data.knowmem_forget_icl)

    def scored_pairs(self, tokenizer, part: str = "all") -> list[tuple[str, str]]:
        """The rows the forget metrics read: the (held-out) VerbMem and KnowMem rows, and PrivLeak's documents."""
        if part == HELD_OUT:
            return self._forget_pairs(self.held_out)
        return self._forget_pairs(self.data) + [("", d) for d in self.data.privleak_forget + self.data.privleak_holdout]

    def relearn_pool(self, tokenizer, attack: str) -> list[tuple[str, str]]:
        if attack == "relearn_forget":
            d = self.data
            return ([(d.verbmem[i]["prompt"], d.verbmem[i]["gt"]) for i in self.trained_verbmem]
                    + self._qa_pairs([d.knowmem_forget[i] for i in self.trained_qa], d.knowmem_forget_icl))
        if attack == "relearn_retain":
            return list(self.rows.documents["retain"]) + list(self.rows.questions["retain"])
        from .mini import split_words

        return [(head, rest) for head, rest in (split_words(d, self.prompt_words) for d in self.rows.reference) if rest.strip()]

    def lens_facts(self, tokenizer) -> list[tuple[str, str]]:
        return self._qa_pairs(self.data.knowmem_forget or [], self.data.knowmem_forget_icl)

    def describe(self) -> dict:
        return {"verbmem": len(self.data.verbmem), "knowmem_forget": len(self.data.knowmem_forget or []),
                "relearned_verbmem": len(self.trained_verbmem), "relearned_knowmem": len(self.trained_qa),
                "privleak": [len(self.data.privleak_forget), len(self.data.privleak_holdout)],
                "retain_relearn_pool": len(self.rows.documents["retain"]) + len(self.rows.questions["retain"]), "related_pool": len(self.rows.reference)}
