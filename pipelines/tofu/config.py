"""TOFU's settings, importable without torch: how a TOFU row becomes a prompt, and how the TOFU
evaluation (:mod:`pipelines.tofu.evaluation`) scores a model (:class:`TofuEvalConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from tracing.errors import AmnesiaError
from tracing.settings import setting
from unlearn.eval.config import DEFAULT_MINK_K
from unlearn.prompts import PROMPT_FORMATS

#: With ``prompt_format: raw`` a TOFU row is ``question + "\n" + answer`` (TOFU's own templates
#: also put a separator between them; SemEval's ``input`` and ``output`` join with none because
#: its inputs are cut mid-sentence). A newline, not a space: byte-level BPE tokenizers attach a
#: space to the next word, so a prompt ending in " " would tokenize differently from the same
#: text inside the training row, while "\n" is a token of its own either way. ``chat`` renders
#: the question with the tokenizer's chat template instead (``unlearn.prompts``).
RAW_SEPARATOR = "\n"
#: The raw prompt of a TOFU question: ``{question}`` and the separator. A model fine-tuned with its
#: own tags takes a template of them (OpenUnlearning's Llama 3 tags: configs/tofu_llama32_1b.yaml).
DEFAULT_QUESTION_TEMPLATE = "{question}" + RAW_SEPARATOR


def check_question_template(template: str) -> str:
    """``template`` if it holds ``{question}`` once, else a one-line error."""
    if not isinstance(template, str) or template.count("{question}") != 1:
        raise AmnesiaError(f"question_template {template!r}: expected a text with {{question}} exactly once (e.g. {DEFAULT_QUESTION_TEMPLATE!r})")
    return template


#: TOFU's membership test reads the answer after its question (OpenUnlearning) or the whole row.
MIA_TOKENS = ("answer", "document")
#: Generation budget: OpenUnlearning's (``configs/generation/default.yaml``: ``max_new_tokens: 200``), see TofuEvalConfig.
DEFAULT_MAX_NEW_TOKENS = 200
#: The membership attacks the TOFU evaluation can run (OpenUnlearning's ``mia_*`` metrics); the
#: reference attack needs the retain model and is computed beside forget quality.
MIA_ATTACKS = ("min_k", "loss", "zlib", "min_k++", "gradnorm")
DEFAULT_MIA_ATTACKS = ("min_k", "loss", "zlib", "min_k++")


@dataclass(frozen=True)
class TofuEvalConfig:
    """How :func:`pipelines.tofu.evaluation.run_tofu_evaluation` scores a model; each field's help is its ``amnesia evaluate-tofu`` option's.

    * ``prompt_format``: ``raw`` (the question, a newline, the answer: :func:`pipelines.tofu.data.question_text`) or
      ``chat`` (the tokenizer's chat template) — the format the model was trained with.
    * ``answer_eos``: every scored answer ends with the tokenizer's EOS, in the answer's mean NLL
      (Prob., truth ratio, the loss and zlib attacks) and left out where OpenUnlearning drops the
      last label (Min-K%, Min-K%++, gradnorm, exact memorization, extraction strength) — TOFU's and
      OpenUnlearning's data pipeline (``src/data/utils.py``, ``src/evals/metrics/utils.py``).
      Off: the answer alone, as the unlearning forget term trains it.
    * ``max_new_tokens``: greedy generation budget, OpenUnlearning's 200 new tokens (TOFU's own
      code: ``max_length=200`` including the prompt); a model that stops at EOS stops earlier.
    * ``batch_size``: rows per forward pass for the losses; ``generation_batch_size``: rows per
      generation batch; None = automatic (memory budget).
    * ``limit``: only the first N rows of each set and of the forget/holdout membership rows (a
      quick look; numbers not comparable to the benchmark's). TOFU's own ``eval_everything.yaml``
      uses ``ds_size: 300``, which only cuts forget10 and retain_perturbed (400 rows each).
    * ``mink_k``: the fraction of tokens Min-K% Prob averages (OpenUnlearning's TOFU default 0.4).
    * ``mia_tokens``: ``answer`` (the answer's tokens after the question, OpenUnlearning) or
      ``document`` (every token of question + answer).
    * ``mia_attacks``: the membership attacks (OpenUnlearning's ``mia_*``): Min-K% (privleak's),
      loss, zlib, Min-K%++ and gradnorm (off by default: a backward pass per row, the memory of
      training); the reference attack (loss minus the retain model's) comes with the comparison.
    * ``es_openunlearning``: extraction strength as OpenUnlearning's loop computes it (a row whose
      last answer token is missed scores ``1/n``, not the definition's 0).
    * ``question_template``: the raw prompt of a question, ``{question}`` in it (default: the
      question and a newline; a model fine-tuned with its own tags takes those, as OpenUnlearning's
      Llama 3 models: ``configs/tofu_llama32_1b.yaml``). Not used with ``chat``.
    * ``clean_up_spaces``: decode as transformers 4's ``clean_up_tokenization`` did.
    * ``tie_margin``: rerun a generation alone when two top logits come closer than this; None =
      1e-3 when the model runs in float32, else off; 0 = off (see :mod:`unlearn.generation`).
    """

    prompt_format: str = setting("raw", choices=PROMPT_FORMATS,
        help="raw = --question-template, then the answer; chat = the question as the user turn of the tokenizer's chat template")
    answer_eos: bool = setting(True, negatable=True,
        help="score each answer with the tokenizer's EOS appended, as TOFU and OpenUnlearning do; --no-answer-eos: the answer alone, as unlearning trains it")
    max_new_tokens: int = setting(DEFAULT_MAX_NEW_TOKENS, help="tokens generated per question for ROUGE-L")
    batch_size: int | None = setting(None, help="rows per forward pass; None = automatic from a memory budget")
    generation_batch_size: int | None = setting(None, help="rows per generation batch; None = automatic from a memory budget")
    limit: int | None = setting(None, help="score only the first N rows of each set (a quick look; numbers not the benchmark's); None = all")
    mink_k: float = setting(DEFAULT_MINK_K, help="fraction of tokens Min-K% Prob averages for privleak (OpenUnlearning's TOFU setting)")
    mia_tokens: str = setting("answer", choices=MIA_TOKENS,
        help="tokens membership inference reads: the answer after its question (OpenUnlearning) or the whole question + answer")
    mia_attacks: tuple[str, ...] = setting(DEFAULT_MIA_ATTACKS,
        help=f"membership attacks, comma-separated, of {', '.join(MIA_ATTACKS)} (gradnorm: a backward pass per row); min_k is privleak's and always runs")
    es_openunlearning: bool = setting(False, negatable=True,
        help="extraction strength as OpenUnlearning's loop computes it (a missed last token scores 1/n, the definition 0)")
    question_template: str = setting(DEFAULT_QUESTION_TEMPLATE,
        help="raw prompt of a question, {question} in it; OpenUnlearning's Llama 3 models take their tags (see configs/tofu_llama32_1b.yaml)")
    clean_up_spaces: bool = setting(False, negatable=True, help="decode as transformers 4's clean_up_tokenization did")
    tie_margin: float | None = setting(None, help="rerun a generation alone when its two best logits come closer than this; None = 1e-3 in float32, off otherwise; 0 = off")

    def check(self) -> None:
        """One-line :class:`AmnesiaError` for a setting out of range."""
        if self.prompt_format not in PROMPT_FORMATS:
            raise AmnesiaError(f"prompt_format {self.prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}")
        if self.max_new_tokens < 1:
            raise AmnesiaError(f"max_new_tokens {self.max_new_tokens}: expected a positive integer")
        for name in ("batch_size", "generation_batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AmnesiaError(f"{name} {value}: expected a positive integer or None")
        if not 0 < self.mink_k <= 1:
            raise AmnesiaError(f"mink_k {self.mink_k}: expected a fraction 0 < k ≤ 1")
        check_question_template(self.question_template)
        unknown = [a for a in self.mia_attacks if a not in MIA_ATTACKS]
        if unknown:
            raise AmnesiaError(f"mia_attacks {unknown}: expected some of {', '.join(MIA_ATTACKS)}")
        if self.mia_tokens not in MIA_TOKENS:
            raise AmnesiaError(f"mia_tokens {self.mia_tokens!r}: expected one of {', '.join(MIA_TOKENS)}")
        if self.tie_margin is not None and self.tie_margin < 0:
            raise AmnesiaError(f"tie_margin {self.tie_margin}: expected a margin ≥ 0 or None")
