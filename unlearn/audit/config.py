"""The audit's settings, one typed place (``amnesia audit``'s options and a run config's ``audit:``
section come from these fields); importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

from tracing.errors import AmnesiaError
from tracing.settings import auto_or_number, setting

from .quantize import SCHEMES

RELEARN = ("relearn_forget", "relearn_retain", "relearn_related")
#: attacks on the prompt, not the weights: the forget questions re-worded, or after other people's QA
PROBES = ("paraphrase", "context")
ATTACKS = SCHEMES + RELEARN + PROBES
#: The rate relearning uses when ``relearn_lr`` is auto and the target has no ``target.json`` (a common full fine-tuning rate).
FALLBACK_RELEARN_LR = 1e-5


@dataclass(frozen=True)
class AuditConfig:
    """Which attacks the audit runs on an unlearned model, and with what budget (docs/audit.md)."""

    enabled: bool = setting(False, cli=False,
        help="run config only: add the audit stage (the demos turn it on; off by default because relearning fine-tunes every parameter of the model)")
    attacks: tuple[str, ...] = setting(ATTACKS,
        help="attacks to run, comma-separated: bf16, int8 (per output row, as LLM.int8), nf4 (blocks of 64), int4 (groups of 128), "
             "relearn_forget (train on half the forget rows, score the other half), relearn_retain (retain rows), relearn_related (never-seen text of the same kind), "
             "paraphrase (the forget questions re-worded), context (other people's QA before each forget prompt)")
    logit_lens: bool = setting(True, negatable=True,
        help="read the forget answers' first-token probability from every layer (target, unlearned, retain model)")
    relearn_steps: int = setting(20, help="optimizer steps of each relearning attack")
    relearn_lr: float | str = setting("auto", type=auto_or_number,
        help=f"relearning rate; auto = the rate the target was trained with, scaled to relearn_batch_size by the linear scaling rule (its target.json, written by make-target), else {FALLBACK_RELEARN_LR:g}")
    relearn_batch_size: int = setting(4, help="rows per relearning step")
    relearn_rows: int | None = setting(None, help="rows each relearning attack trains on; None = as many as half the forget rows (the same amount of text for all three)")
    references: bool = setting(True, negatable=True,
        help="apply every attack to the target (and TOFU's retain model) too: what an attack does to a model that never unlearned")
    retain_model: str | None = setting(None, cli=False,
        help="run config only: a model trained without the forget rows (folder or Hub id), attacked beside the target: recovery counts only what "
             "rises above it under the same attack; default: the run's retain model (TOFU), or the target's recipe on the retain rows when the run builds "
             "its target, else none (recovery read from the unlearned level: an upper bound)")
    controls: bool = setting(True, cli=False,
        help="run config only: audit every control model too (--control methods gets a worst-case recovery column)")
    seed: int = setting(0, help="seed of the forget half and the relearning order")

    def check(self) -> None:
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise AmnesiaError(f"audit attacks {unknown}: expected some of {', '.join(ATTACKS)}")
        if self.relearn_steps < 1:
            raise AmnesiaError(f"audit relearn_steps {self.relearn_steps}: expected a positive number of steps")
        if self.relearn_batch_size < 1:
            raise AmnesiaError(f"audit relearn_batch_size {self.relearn_batch_size}: expected a positive number of rows")
        if self.relearn_rows is not None and self.relearn_rows < 1:
            raise AmnesiaError(f"audit relearn_rows {self.relearn_rows}: expected a positive number of rows (or leave it out)")
        if self.relearn_lr != "auto" and not (isinstance(self.relearn_lr, (int, float)) and self.relearn_lr > 0):
            raise AmnesiaError(f"audit relearn_lr {self.relearn_lr!r}: expected auto or a positive number")
