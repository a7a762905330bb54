"""One prompt format for every stage: what text the model sees before an answer.

* ``raw`` (default): the row's ``input`` as it is, joined with ``output`` with no separator —
  how the SemEval-2025 Task 4 organizers fine-tuned their targets and scored them;
* ``chat``: the input as a user turn of the tokenizer's chat template, followed by the
  generation prompt (for a target fine-tuned that way; the tokenizer must have a template).

Every stage — make-target, tracing, unlearning, evaluation — renders prompts with
:func:`render_prompts` and tokenizes the result with the tokenizer's usual special tokens, so a
model is trained, traced and scored on the same text. A chat template that writes the BOS token
itself has it removed from the text when the tokenizer adds BOS anyway (no doubled BOS).
The format a model was trained with is recorded in ``target.json`` / ``unlearn.json``;
:func:`trained_format` reads it back so evaluation can warn about a mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tracing.errors import AmnesiaError

PROMPT_FORMATS = ("raw", "chat")


def check_prompt_format(tokenizer, fmt: str) -> str:
    """``fmt`` if it is a known format the tokenizer can render, else a one-line error."""
    if fmt not in PROMPT_FORMATS:
        raise AmnesiaError(f"prompt_format {fmt!r}: expected one of {', '.join(PROMPT_FORMATS)}")
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "the model"
        raise AmnesiaError(f"prompt_format chat: the tokenizer of {name} has no chat template (use prompt_format raw)")
    return fmt


def _adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def render_prompts(tokenizer, texts: Sequence[str], fmt: str = "raw") -> list[str]:
    """The prompt texts for ``fmt`` (tokenize them with the tokenizer's default special tokens).

    The format is checked, and whether the tokenizer adds BOS itself found out, once for all texts.
    """
    check_prompt_format(tokenizer, fmt)
    if fmt == "raw":
        return list(texts)
    bos = getattr(tokenizer, "bos_token", None)
    strip = bool(bos) and _adds_bos(tokenizer)
    out = []
    for text in texts:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        out.append(rendered[len(bos):] if strip and rendered.startswith(bos) else rendered)
    return out


def render_prompt(tokenizer, text: str, fmt: str = "raw") -> str:
    """:func:`render_prompts` of one input."""
    return render_prompts(tokenizer, [text], fmt)[0]


def trained_format(model_path: str | Path | None) -> tuple[str, str] | None:
    """``(format, file)`` the model folder says it was trained with (``unlearn.json``, else ``target.json``), or None."""
    if not model_path:
        return None
    folder = Path(str(model_path)).expanduser()
    for name in ("unlearn.json", "target.json"):
        path = folder / name
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return None
            fmt = manifest.get("prompt_format") or (manifest.get("hyperparameters") or {}).get("prompt_format")
            return (fmt, str(path)) if fmt in PROMPT_FORMATS else None
    return None


def format_mismatch(model_path: str | Path | None, fmt: str) -> str | None:
    """A one-line warning when the model was trained with another prompt format than ``fmt``."""
    found = trained_format(model_path)
    if found is None or found[0] == fmt:
        return None
    return (f"{found[1]} says the model was trained with prompt_format {found[0]}, but it is scored with {fmt}: "
            f"the numbers describe text it was not trained on (pass --prompt-format {found[0]})")


def split_at_space(prompt_text: str) -> bool:
    """True when ``prompt_text`` ends in a space: byte-level BPE joins a space to the word after it,
    so the joint text ``prompt + answer`` is not what generation reads (the prompt's lone space,
    then the answer's first word without it) — such a pair is tokenized apart (MUSE's KnowMem
    prompts end in ``Answer: ``). No SemEval or TOFU prompt does."""
    return prompt_text.endswith(" ")


def pair_ids(tokenizer, prompt_text: str, rest: str, add_special_tokens: bool = True) -> tuple[list[int], int]:
    """Token ids of ``prompt_text`` tokenized on its own (special tokens added unless told not to)
    followed by those of ``rest`` (none added), and the prompt's token count: how a pair that
    :func:`split_at_space` splits is read."""
    prompt = tokenizer(prompt_text, add_special_tokens=add_special_tokens)["input_ids"]
    return list(prompt) + list(tokenizer(rest, add_special_tokens=False)["input_ids"]), len(prompt)
