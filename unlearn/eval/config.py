"""The evaluation's settings, in one typed place (the CLI only fills this in); importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

from tracing.errors import AmnesiaError
from tracing.settings import setting

from ..prompts import PROMPT_FORMATS

#: The shared task's MMLU floor for the 7B model; below it a warning is issued.
MMLU_THRESHOLD = 0.371
#: Near-tie margin (logits) used in fp32 when ``tie_margin`` is None; see :mod:`unlearn.generation`.
DEFAULT_TIE_MARGIN = 1e-3
SPLIT_CHOICES = ("auto", "train", "validation")


@dataclass(frozen=True)
class MMLUConfig:
    """What to run: ``source`` auto|hub|off|DIR, few-shot count, questions per subject, subjects (empty = all)."""

    source: str = "auto"
    shots: int = 0
    limit: int | None = None
    subjects: tuple[str, ...] = ()
    batch_size: int | None = None

    def check(self) -> None:
        if not 0 <= self.shots <= 5:
            raise AmnesiaError(f"--mmlu-shots {self.shots}: expected 0 to 5 (MMLU's dev split has 5 questions per subject)")
        if self.limit is not None and self.limit < 1:
            raise AmnesiaError(f"--mmlu-limit {self.limit}: expected a positive number of questions per subject")
        if self.batch_size is not None and self.batch_size < 1:
            raise AmnesiaError(f"batch size {self.batch_size}: expected a positive integer")


@dataclass(frozen=True)
class EvalConfig:
    """What :func:`unlearn.eval.evaluate` scores and how; each field's help is its ``amnesia evaluate`` option's.

    * ``splits``: ``train`` (the rows an unlearning request names, as the official script reads
      forget.jsonl / retain.jsonl), ``validation`` (the rows ``amnesia unlearn`` selects its
      checkpoint on), or ``auto`` = train when the data has both train splits, else validation.
    * ``mia``: a folder with ``member.jsonl`` / ``nonmember.jsonl``; None = the data folder's
      ``mia_data/`` when present; ``"off"`` = skip (then ``aggregate-score`` is −1).
    * ``mmlu``: ``auto`` | ``hub`` | ``builtin`` | ``off`` | a local folder (see :mod:`unlearn.eval.mmlu`).
    * ``batch_size``: rows per batch for generation, NLL and MMLU; None = automatic.
    * ``limit``: only the first N rows of each split (a quick look; not comparable numbers).
    * ``prompt_format``: ``raw`` (the input as is, as the organizers) or ``chat`` (the tokenizer's
      chat template); the format the model was trained with (see :mod:`unlearn.prompts`).
    * ``clean_up_spaces``: decode as the organizers' transformers 4 did (see :mod:`unlearn.generation`).
    * ``tie_margin``: rerun a row alone when two top logits come closer than this; None = 1e-3
      when the model runs in float32, else off; 0 = off.
    """

    splits: str = setting("auto", choices=SPLIT_CHOICES,
        help="which rows to score; auto = train (the rows an unlearning request names; `amnesia unlearn` also reads the validation rows, which select its checkpoint) when the data has them, else validation")
    mia: str | None = setting(None, help="folder with member.jsonl and nonmember.jsonl; None = DATA/mia_data when present; 'off' to skip")
    mmlu: str = setting("auto", help="auto (the local copy in $AMNESIA_MMLU_DIR if set, else the Hub when it answers, else builtin), hub (lm-eval's mmlu from the Hub), builtin (the package's subset: 5 test questions per subject, 285 in all), off, or a folder in hails/mmlu_no_train layout")
    mmlu_shots: int = setting(0, help="few-shot examples per MMLU question (0 = lm-eval's default; 5 = the classic MMLU setting)")
    mmlu_limit: int | None = setting(None, help="questions per MMLU subject; None = all")
    mmlu_subjects: tuple[str, ...] = setting((), help="comma-separated MMLU subjects, e.g. anatomy,philosophy; empty = all 57")
    mmlu_threshold: float = setting(MMLU_THRESHOLD, help="warn when the MMLU average is below this (the shared task's floor for 7B)")
    max_new_tokens: int = setting(256, help="tokens generated per row (the organizers use 256)")
    batch_size: int | None = setting(None, help="rows per batch for generation, NLL and MMLU; None = automatic from a memory budget")
    limit: int | None = setting(None, help="score only the first N rows of each split (a quick look; numbers are not comparable); None = all")
    prompt_format: str = setting("raw", choices=PROMPT_FORMATS,
        help="raw = each input as is (the organizers' format); chat = wrapped in the tokenizer's chat template; use the format the model was trained with (a warning says when its unlearn.json names another)")
    clean_up_spaces: bool = setting(True, help="decode with transformers 4's clean_up_tokenization, as the organizers' script did")
    tie_margin: float | None = setting(None, help="rerun a row alone when its two best logits come closer than this; None = 1e-3 in float32, off otherwise; 0 = off")

    def check(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise AmnesiaError(f"--prompt-format {self.prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}")
        if self.splits not in SPLIT_CHOICES:
            raise AmnesiaError(f"--splits {self.splits!r}: expected one of {', '.join(SPLIT_CHOICES)}")
        if self.max_new_tokens < 1:
            raise AmnesiaError(f"--max-new-tokens {self.max_new_tokens}: expected a positive integer")
        if self.batch_size is not None and self.batch_size < 1:
            raise AmnesiaError(f"--batch-size {self.batch_size}: expected a positive integer")
        if self.limit is not None and self.limit < 1:
            raise AmnesiaError(f"--limit {self.limit}: expected a positive number of rows per split")
        if self.tie_margin is not None and not self.tie_margin >= 0:
            raise AmnesiaError(f"--tie-margin {self.tie_margin}: expected a number >= 0 (0 turns the check off)")
        if not 0 <= self.mmlu_threshold <= 1:
            raise AmnesiaError(f"--mmlu-threshold {self.mmlu_threshold}: expected a number in [0, 1]")
        self.mmlu_config().check()

    def mmlu_config(self) -> MMLUConfig:
        return MMLUConfig(source=self.mmlu, shots=self.mmlu_shots, limit=self.mmlu_limit, subjects=tuple(self.mmlu_subjects), batch_size=self.batch_size)


#: The fraction of tokens Min-K% Prob averages (OpenUnlearning's TOFU default; validation's min_k attack).
DEFAULT_MINK_K = 0.4
