"""A CPU-sized MUSE: excerpts of MUSE's own rows, written back in MUSE's layout.

MUSE's targets are 7B models fine-tuned on whole articles of about 1,800 tokens; a CPU demo trains
a 6-layer model from scratch with a 256-position context. :func:`build_mini` keeps MUSE's four
tests and its rows' roles, at excerpt length (``muse:`` section of a run config, docs/muse.md):

* **forget documents** — the first ``forget_docs`` VerbMem rows, each cut to the last
  ``prompt_words`` words of its prompt and the first ``continuation_words`` words of its true
  continuation (the cut keeps the text's own characters). Their prompt/continuation pairs are the
  mini VerbMem set, and the whole excerpts are the PrivLeak members (``privleak/forget.json``)
  and the forget corpus (``raw/forget.json``);
* **KnowMem** — the first ``qa`` forget and retain questions with the first ``icl_examples``
  in-context examples. A tiny model trained from scratch on excerpts does not learn to answer
  questions about them, so the target is trained on the KnowMem prompts themselves (the
  examples, then ``Question: …\\nAnswer: `` and the answer): KnowMem then tests what it measures
  — whether the model still gives the answer — on facts the target verifiably holds;
* **retain documents** — ``forget_docs`` excerpts of ``privleak/retain2`` articles (the kept
  members, ``privleak/retain2.json``), trained on by the target and the retain model;
* **never-seen documents** — excerpts of ``privleak/holdout`` articles: PrivLeak's non-members
  (the test), never trained on;
* **reference documents** — excerpts of ``raw/forget`` articles that hold none of the selected
  VerbMem passages: never trained on and not the test holdout — what forgetting is calibrated
  to and checkpoints are selected with (as TOFU's reference authors are).

Every excerpt other than the VerbMem ones is taken from the middle of its article, where the
VerbMem passages lie (about 650 words in), so members and non-members read alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tracing.errors import AmnesiaError

from .data import MuseData
from .metrics import knowmem_prompt

_WORD = re.compile(r"\S+")


def last_words(text: str, n: int) -> str:
    """The last ``n`` words of ``text`` with the characters between them (the whole text when shorter)."""
    spans = [m.start() for m in _WORD.finditer(text)]
    return text[spans[-n]:] if len(spans) > n else text.lstrip()


def first_words(text: str, n: int) -> str:
    """The first ``n`` words of ``text``, leading whitespace kept (a continuation's first space is part of it)."""
    ends = [m.end() for m in _WORD.finditer(text)]
    return text[: ends[n - 1]] if len(ends) >= n else text.rstrip()


def split_words(text: str, n: int) -> tuple[str, str]:
    """``text`` as its first ``n`` words (:func:`first_words`) and the rest: a document's prompt and output."""
    head = first_words(text, n)
    return head, text[len(head):]


def middle_words(text: str, n: int) -> str:
    """``n`` consecutive words from the middle of ``text`` (all of it when shorter)."""
    words = list(_WORD.finditer(text))
    if len(words) <= n:
        return text.strip()
    start = (len(words) - n) // 2
    return text[words[start].start(): words[start + n - 1].end()]


def word_chunks(text: str, n: int) -> list[str]:
    """``text`` cut into consecutive pieces of ``n`` words (the last may be shorter), each with the characters between its words."""
    words = list(_WORD.finditer(text))
    return [text[words[i].start(): words[min(i + n, len(words)) - 1].end()] for i in range(0, len(words), n)]


@dataclass(frozen=True)
class MiniMuse:
    """The excerpts of :func:`build_mini` (module docstring)."""

    verbmem: list[dict]          # {prompt, gt}
    knowmem_forget: list[dict]   # {question, answer}
    knowmem_retain: list[dict]
    forget_icl: list[dict]
    retain_icl: list[dict]
    retain_docs: list[str]
    holdout_docs: list[str]
    reference_docs: list[str]

    @property
    def forget_docs(self) -> list[str]:
        return [r["prompt"] + r["gt"] for r in self.verbmem]

    def forget_qa_prompts(self) -> list[str]:
        return [knowmem_prompt(r["question"], self.forget_icl) for r in self.knowmem_forget]

    def retain_qa_prompts(self) -> list[str]:
        return [knowmem_prompt(r["question"], self.retain_icl) for r in self.knowmem_retain]


def build_mini(data: MuseData, *, forget_docs: int, prompt_words: int, continuation_words: int, qa: int, icl_examples: int | None) -> MiniMuse:
    """Cut ``data`` to a CPU-sized MUSE (module docstring); one-line errors when it has too few rows."""
    if data.knowmem_forget is None or data.knowmem_retain is None:
        raise AmnesiaError(f"{data.source}: a CPU-sized MUSE run needs knowmem/forget_qa.json and knowmem/retain2_qa.json (MUSE-News has them; MUSE-Books has no KnowMem)")
    if data.privleak_retain is None:
        raise AmnesiaError(f"{data.source}: a CPU-sized MUSE run needs privleak/retain2.json (its retain documents)")
    if data.raw_forget is None:
        raise AmnesiaError(f"{data.source}: a CPU-sized MUSE run needs raw/forget.json (its never-seen reference documents for calibration)")
    for what, rows, need in (("verbmem/forget.json", data.verbmem, forget_docs), ("privleak/retain2.json", data.privleak_retain, forget_docs),
                             ("privleak/holdout.json", data.privleak_holdout, forget_docs), ("knowmem/forget_qa.json", data.knowmem_forget, qa),
                             ("knowmem/retain2_qa.json", data.knowmem_retain, qa)):
        if len(rows) < need:
            raise AmnesiaError(f"{data.source}: {what} has {len(rows)} rows; muse.forget_docs / muse.qa ask for {need}")
    verbmem = [{"prompt": last_words(r["prompt"], prompt_words), "gt": first_words(r["gt"], continuation_words)} for r in data.verbmem[:forget_docs]]
    words = prompt_words + continuation_words
    passages = [r["prompt"][-200:] for r in data.verbmem[:forget_docs]] + [r["gt"][:200] for r in data.verbmem[:forget_docs]]
    unused = [a for a in data.raw_forget if not any(p.strip() and p.strip() in a for p in passages)]
    if len(unused) < forget_docs:
        raise AmnesiaError(f"{data.source}: raw/forget.json has {len(unused)} articles without a selected VerbMem passage; muse.forget_docs asks for {forget_docs}")
    icl = (lambda rows: list(rows) if icl_examples is None else list(rows[:icl_examples]))
    return MiniMuse(
        verbmem=verbmem,
        knowmem_forget=list(data.knowmem_forget[:qa]), knowmem_retain=list(data.knowmem_retain[:qa]),
        forget_icl=icl(data.knowmem_forget_icl), retain_icl=icl(data.knowmem_retain_icl),
        retain_docs=[middle_words(a, words) for a in data.privleak_retain[:forget_docs]],
        holdout_docs=[middle_words(a, words) for a in data.privleak_holdout[:forget_docs]],
        reference_docs=[middle_words(a, words) for a in unused[:forget_docs]],
    )


def write_muse_folder(mini: MiniMuse, folder: Path) -> None:
    """``mini`` in MUSE's layout (verbmem/, knowmem/, privleak/, raw/): what :func:`pipelines.muse.data.load_muse` reads."""
    files = {
        "verbmem/forget.json": mini.verbmem,
        "knowmem/forget_qa.json": mini.knowmem_forget, "knowmem/forget_qa_icl.json": mini.forget_icl,
        "knowmem/retain2_qa.json": mini.knowmem_retain, "knowmem/retain2_qa_icl.json": mini.retain_icl,
        "privleak/forget.json": mini.forget_docs, "privleak/holdout.json": mini.holdout_docs, "privleak/retain2.json": mini.retain_docs,
        "raw/forget.json": mini.forget_docs,
    }
    for name, rows in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


_SPAN = re.compile(r"[A-Z][\w'’.&-]*(?:\s+(?:of|the|de|and|for|in|von|van|du|la)?\s*[A-Z][\w'’.&-]*)*")
_QUESTION_WORDS = {"What", "Which", "Who", "Whom", "Whose", "When", "Where", "Why", "How", "In", "According", "On", "At", "By", "For", "The",
                   "A", "An", "During", "After", "Before", "From", "To", "Since", "As", "Under", "Is", "Was", "Are", "Did", "Does", "Do"}


def question_subject(question: str, context: str = "") -> str | None:
    """The named entity a KnowMem question is about — what tracing corrupts: the longest run of
    capitalised words in ``question`` (a leading question word dropped) that does not occur in
    ``context`` (the in-context examples before it, so the subject's first occurrence in the prompt
    is the question's); None when the question names none."""
    spans = []
    for m in _SPAN.finditer(question):
        words = m.group(0).split()
        while words and words[0] in _QUESTION_WORDS:
            words = words[1:]
        text = " ".join(words).rstrip(".?,")
        if text and len(text) > 1 and text in question and text not in context:
            spans.append(text)
    return max(spans, key=len) if spans else None


__all__ = ["MiniMuse", "build_mini", "first_words", "last_words", "middle_words", "question_subject", "split_words", "word_chunks", "write_muse_folder"]
