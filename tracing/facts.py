"""Facts to trace: ``{prompt, subject, answer}``, their subject tokens, and the ROME filter.

A :class:`Fact` is a prompt that names a *subject* and whose correct continuation is *answer*.
``answer`` is the exact text that follows the prompt, leading space included when there is one:
SemEval rows join ``input + output`` with no separator, so their answers have none, while ROME's
known-facts records (``prompt`` + ``attribute``) are joined by one space (see
:func:`facts_from_records`).

Builders:

* :func:`facts_from_rows` — SemEval-layout rows (dicts, ``(id, input, output, task, split)``
  sequences, or a ``datasets.Dataset``): every Task-2 QA row whose question names its person
  ("What is the birth date of NAME?", "What is NAME's phone number?", ...). With
  ``rephrase=True`` the question becomes the paper's "What is NAME's RELATION?".
* :func:`facts_from_records` — user records ``{prompt, subject, answer}`` or ROME's
  ``{prompt, subject, attribute}``.

:func:`prepare_facts` tokenizes facts for one model: the subject's token span comes from the
tokenizer's offset mapping (robust to a leading space, BPE merges, tokenizers that trim or keep
spaces in offsets), the answer's first token from tokenizing ``prompt + answer``. A fact is kept
only if the model's greedy next token is that answer token (as ROME and the paper do); the others
are reported with a reason (:data:`SKIP_REASONS`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch

from .errors import AmnesiaError

SUBJECT_NOT_FOUND = "subject not found"
WRONG_PREDICTION = "wrong prediction"
TOO_LONG = "too long"
SKIP_REASONS = (SUBJECT_NOT_FOUND, WRONG_PREDICTION, TOO_LONG)

# The public data's Task-2 question templates: "What is the RELATION of NAME?" and
# "What is NAME's RELATION?" (the second also covers the paper's rephrasing).
QUESTION_PATTERNS = (
    re.compile(r"^\s*What is the (?P<relation>.+?) of (?P<subject>[^?]+?)\s*\?\s*$"),
    re.compile(r"^\s*What is (?P<subject>[^?]+?)['\u2019]s (?P<relation>[^?]+?)\s*\?\s*$"),
)
ROW_COLUMNS = ("id", "input", "output", "task", "split")
_QA_ID = re.compile(r"qa\d+$")


@dataclass(frozen=True)
class Fact:
    """A prompt naming ``subject`` whose continuation is ``answer`` (appended verbatim)."""

    prompt: str
    subject: str
    answer: str
    id: str = ""
    relation: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Skipped:
    """A candidate fact that is not traced, and why (one of :data:`SKIP_REASONS`)."""

    fact: Fact
    reason: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {**self.fact.to_dict(), "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class TokenizedFact:
    """A fact tokenized for one model: ``input_ids[subject_range[0]:subject_range[1]]`` is the subject."""

    fact: Fact
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    subject_range: tuple[int, int]
    answer_id: int
    answer_token: str

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


@dataclass
class FactSet:
    """Facts that passed the filter (``kept``) and those that did not (``skipped``)."""

    kept: list[TokenizedFact] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """``{"kept": n, "subject not found": n, "wrong prediction": n, "too long": n}``."""
        reasons = Counter(s.reason for s in self.skipped)
        return {"kept": len(self.kept), **{r: reasons.get(r, 0) for r in SKIP_REASONS}}


# --------------------------------------------------------------------------- building facts


def parse_question(question: str) -> tuple[str, str] | None:
    """``(subject, relation)`` of a Task-2 style question, or ``None`` when it names no subject."""
    for pattern in QUESTION_PATTERNS:
        match = pattern.match(question)
        if match:
            return match.group("subject").strip(), match.group("relation").strip()
    return None


def rephrase_question(subject: str, relation: str) -> str:
    """The paper's rephrasing: "What is SUBJECT's RELATION?"."""
    return f"What is {subject}'s {relation}?"


def _row_dict(row: Any, index: int) -> Mapping:
    if isinstance(row, Mapping):
        return row
    if isinstance(row, Sequence) and not isinstance(row, str) and 3 <= len(row) <= len(ROW_COLUMNS):
        return dict(zip(ROW_COLUMNS, row))
    raise AmnesiaError(f"row {index}: expected a mapping with id, input, output, task or a sequence (id, input, output[, task, split]), got {type(row).__name__}")


def facts_from_rows(
    rows: Iterable[Any], *, tasks: Sequence[str] | None = ("Task2",), rephrase: bool = False
) -> tuple[list[Fact], list[Skipped]]:
    """Facts from SemEval-layout QA rows, plus the QA rows whose question names no subject.

    A row is a candidate when its id ends in ``qa<digit>`` (rows without an id count as QA) and
    its ``task`` is in ``tasks`` (``None``: any task). Its question must match one of
    :data:`QUESTION_PATTERNS`; the subject is the person named, the answer the row's ``output``.
    """
    facts: list[Fact] = []
    skipped: list[Skipped] = []
    for i, raw in enumerate(rows):
        row = _row_dict(raw, i)
        for key in ("input", "output"):
            if not isinstance(row.get(key), str):
                raise AmnesiaError(f"row {i} ({row.get('id', 'no id')}): field {key!r} must be a string, got {row.get(key)!r}")
        row_id = str(row.get("id", "") or "").strip().strip('"')
        if row_id and not _QA_ID.search(row_id):
            continue
        if tasks is not None and row.get("task") is not None and row["task"] not in tasks:
            continue
        question, answer = row["input"], row["output"]
        parsed = parse_question(question)
        if parsed is None:
            skipped.append(Skipped(Fact(question, "", answer, row_id), SUBJECT_NOT_FOUND, "question names no subject"))
            continue
        subject, relation = parsed
        prompt = rephrase_question(subject, relation) if rephrase else question
        facts.append(Fact(prompt, subject, answer, row_id, relation))
    return facts, skipped


def facts_from_records(records: Iterable[Mapping], *, where: str = "facts") -> list[Fact]:
    """Facts from ``{prompt, subject, answer}`` records or ROME's ``{prompt, subject, attribute}``.

    ``answer`` is appended to the prompt verbatim. ROME's ``attribute`` is joined with one space
    (as ROME tokenizes it), unless the prompt already ends in whitespace. Optional ``id`` and
    ``relation`` fields are kept (ROME's ``known_id`` / ``relation_id`` too). A record whose
    subject does not occur in its prompt is an error (facts built from data rows are skipped
    with a reason instead, by :func:`prepare_facts`).
    """
    facts = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise AmnesiaError(f"{where}[{i}]: expected an object with prompt, subject, answer, got {type(rec).__name__}")
        missing = [k for k in ("prompt", "subject") if not isinstance(rec.get(k), str) or not rec[k].strip()]
        answer = rec.get("answer", rec.get("attribute"))
        if isinstance(answer, str) and "answer" not in rec and not answer[:1].isspace() and not str(rec.get("prompt", ""))[-1:].isspace():
            answer = " " + answer  # ROME joins prompt and attribute with a space
        if not isinstance(answer, str) or not answer.strip():
            missing.append("answer")
        if missing:
            raise AmnesiaError(f"{where}[{i}]: missing or empty field(s) {', '.join(missing)} (expected non-empty strings prompt, subject and answer or attribute)")
        if rec["subject"].strip() not in rec["prompt"]:  # a record says where its subject is: a typo, not a skip
            raise AmnesiaError(f"{where}[{i}]: subject {rec['subject']!r} does not occur in prompt {rec['prompt']!r}")
        rid = rec.get("id", rec.get("known_id", ""))
        facts.append(Fact(rec["prompt"], rec["subject"], answer, str(rid), str(rec.get("relation", rec.get("relation_id", "")) or "")))
    return facts


# --------------------------------------------------------------------------- tokenizing


def _offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (special tokens added as the tokenizer does) and character offsets.

    Uses the fast tokenizer's offset mapping; slow tokenizers fall back to decoding prefixes.
    Special tokens get the empty span ``(0, 0)``.
    """
    try:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        offsets, end = [], 0
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for i in range(len(ids)):
            if ids[i] in special:
                offsets.append((0, 0))
                continue
            decoded = tokenizer.decode([t for t in ids[: i + 1] if t not in special])
            new_end = min(len(decoded), len(text))
            offsets.append((end, new_end))
            end = new_end
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    offsets = [(0, 0) if t in special else o for t, o in zip(ids, offsets)]
    return ids, offsets


def subject_token_range(tokenizer, prompt: str, subject: str) -> tuple[int, int]:
    """Token positions ``[start, end)`` of the first occurrence of ``subject`` in ``prompt``.

    A token belongs to the subject when its character span overlaps the subject's (so a token
    carrying a leading space, or merged across the subject's edge, counts). Raises
    :class:`AmnesiaError` when the subject does not occur in the prompt.
    """
    _, offsets = _offsets(tokenizer, prompt)
    return _span_from_offsets(offsets, prompt, subject)


def _span_from_offsets(offsets: Sequence[tuple[int, int]], prompt: str, subject: str) -> tuple[int, int]:
    needle = subject.strip()
    start_char = prompt.find(needle) if needle else -1
    if start_char < 0:
        raise AmnesiaError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    end_char = start_char + len(needle)
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < end_char and b > start_char]
    if not inside:
        raise AmnesiaError(f"subject {subject!r} covers no token of prompt {prompt!r}")
    return inside[0], inside[-1] + 1


def tokenize_fact(tokenizer, fact: Fact, *, answer_id: int | None = None) -> TokenizedFact:
    """Tokenize a fact: ids, token strings, subject span and the answer's first token.

    The answer token is the first token after the prompt in ``tokenize(prompt + answer)`` when
    the prompt's tokens are a prefix of it (the answer is read in context, as the model was
    trained), else the first token of the answer tokenized alone; ``answer_id`` overrides both.
    """
    ids, offsets = _offsets(tokenizer, fact.prompt)
    span = _span_from_offsets(offsets, fact.prompt, fact.subject)
    if not fact.answer:
        raise AmnesiaError(f"fact {fact.prompt!r}: empty answer")
    tokens = tuple(tokenizer.decode([t]) for t in ids)
    if answer_id is not None:
        return TokenizedFact(fact, tuple(ids), tokens, span, int(answer_id), tokenizer.decode([answer_id]))
    joint = list(tokenizer(fact.prompt + fact.answer, add_special_tokens=True)["input_ids"])
    if len(joint) > len(ids) and joint[: len(ids)] == ids:
        answer_id = joint[len(ids)]
    else:
        alone = list(tokenizer(fact.answer, add_special_tokens=False)["input_ids"])
        if not alone:
            raise AmnesiaError(f"fact {fact.prompt!r}: answer {fact.answer!r} has no tokens")
        answer_id = alone[0]
    return TokenizedFact(fact, tuple(ids), tokens, span, int(answer_id), tokenizer.decode([answer_id]))


# --------------------------------------------------------------------------- the ROME filter


@torch.no_grad()
def greedy_next_tokens(model, sequences: Sequence[Sequence[int]], batch_size: int = 64) -> list[int]:
    """The model's greedy next token after each id sequence (equal-length batches, no padding)."""
    device = next(model.parameters()).device
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        by_length.setdefault(len(seq), []).append(i)
    out = [0] * len(sequences)
    was_training = model.training
    model.eval()
    try:
        for length, idx in sorted(by_length.items()):
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                ids = torch.tensor([list(sequences[i]) for i in chunk], device=device)
                logits = model(input_ids=ids).logits[:, -1]
                for i, tok in zip(chunk, logits.argmax(-1).tolist()):
                    out[i] = int(tok)
    finally:
        model.train(was_training)
    return out


def prepare_facts(model, tokenizer, facts: Iterable[Fact], *, max_tokens: int = 128, check_prediction: bool = True) -> FactSet:
    """Tokenize ``facts`` and keep those the model predicts: ROME's known-facts filter.

    Skipped with a reason: the subject is not in the prompt (:data:`SUBJECT_NOT_FOUND`), the
    prompt has more than ``max_tokens`` tokens (:data:`TOO_LONG`), or the model's greedy next
    token is not the answer's first token (:data:`WRONG_PREDICTION`). Kept facts keep their order.
    """
    if max_tokens < 1:
        raise AmnesiaError(f"max_tokens {max_tokens}: expected a positive integer")
    result = FactSet()
    candidates: list[TokenizedFact] = []
    for fact in facts:
        try:
            tf = tokenize_fact(tokenizer, fact)
        except AmnesiaError as exc:
            result.skipped.append(Skipped(fact, SUBJECT_NOT_FOUND, str(exc)))
            continue
        if tf.n_tokens > max_tokens:
            result.skipped.append(Skipped(fact, TOO_LONG, f"{tf.n_tokens} tokens > {max_tokens}"))
            continue
        candidates.append(tf)
    predicted = greedy_next_tokens(model, [tf.input_ids for tf in candidates]) if check_prediction else [tf.answer_id for tf in candidates]
    for tf, pred in zip(candidates, predicted):
        if pred == tf.answer_id:
            result.kept.append(tf)
        else:
            result.skipped.append(Skipped(tf.fact, WRONG_PREDICTION, f"predicted {tokenizer.decode([pred])!r}, answer starts with {tf.answer_token!r}"))
    return result


def token_groups(n_tokens: int, subject_range: tuple[int, int]) -> dict[str, list[int]]:
    """Token positions of each of ROME's token groups (the table in :mod:`tracing.aggregation`); groups may be empty."""
    s, e = subject_range
    T = n_tokens
    if not 0 <= s < e <= T:
        raise ValueError(f"subject range {subject_range} does not fit {T} tokens")
    return {
        "first_subject": [s],
        "middle_subject": list(range(s + 1, e - 1)),
        "last_subject": [e - 1],
        "first_subsequent": [e] if e < T else [],
        "further": list(range(e + 1, T - 1)),
        "last": [T - 1],
    }
