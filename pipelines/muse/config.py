"""MUSE's evaluation settings, importable without torch (``amnesia evaluate-muse``'s options come from these fields)."""

from __future__ import annotations

from dataclasses import dataclass

from tracing.errors import AmnesiaError
from tracing.settings import setting

from .data import CORPORA

#: MUSE's published AUC of its retrained models (Min-40%, forget vs holdout, the authors' orientation:
#: ``constants.py`` ``AUC_RETRAIN[corpus]["forget_holdout_Min-40%"]``): PrivLeak's reference when no retain model is scored.
AUC_RETRAIN = {"news": 0.4772, "books": 0.5393}


@dataclass(frozen=True)
class MuseEvalConfig:
    """How :func:`pipelines.muse.evaluation.run_muse_evaluation` scores a model (MUSE's ``eval.py`` defaults)."""

    corpus: str = setting("auto", choices=("auto",) + CORPORA,
        help="which MUSE corpus (news, books): picks the published retrained-model AUC PrivLeak is relative to when no retain model is given; auto = from the data folder's name")
    verbmem_max_new_tokens: int = setting(128, help="VerbMem: greedy tokens generated after each prompt (and the length the reference continuation is cut to)")
    knowmem_max_new_tokens: int = setting(32, help="KnowMem: greedy tokens generated per answer")
    mink_k: float = setting(0.4, help="PrivLeak: the fraction of a text's least likely tokens Min-K% Prob averages (MUSE: Min-40%)")
    limit: int | None = setting(None, help="score only the first N rows of each set (a quick look; numbers not the benchmark's); None = all")
    batch_size: int | None = setting(None, help="rows per forward pass for PrivLeak; None = automatic from a memory budget")
    generation_batch_size: int | None = setting(None, help="rows per generation batch; None = automatic from a memory budget")
    clean_up_spaces: bool = setting(True, negatable=True,
        help="decode as transformers 4's clean_up_tokenization_spaces=True did, as MUSE's eval.py decodes (on by default)")
    tie_margin: float | None = setting(None, help="rerun a generation alone when its two best logits come closer than this; None = 1e-3 in float32, off otherwise; 0 = off")

    def check(self) -> None:
        if self.corpus not in ("auto",) + CORPORA:
            raise AmnesiaError(f"corpus {self.corpus!r}: expected auto, news or books")
        for name in ("verbmem_max_new_tokens", "knowmem_max_new_tokens"):
            if getattr(self, name) < 1:
                raise AmnesiaError(f"{name} {getattr(self, name)}: expected a positive number of tokens")
        if not 0 < self.mink_k <= 1:
            raise AmnesiaError(f"mink_k {self.mink_k}: expected a fraction 0 < k ≤ 1")
        for name in ("limit", "batch_size", "generation_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AmnesiaError(f"{name} {value}: expected a positive integer or None")
        if self.tie_margin is not None and self.tie_margin < 0:
            raise AmnesiaError(f"tie_margin {self.tie_margin}: expected a margin ≥ 0 or None")
