"""The TOFU benchmark's data: a reader that checks the layout, and author-level subsets.

TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning", github.com/locuslab/tofu;
Hub dataset ``locuslab/TOFU``) is 200 fictitious authors with 20 question/answer pairs each.
:func:`load_tofu` reads a folder in the Hub dataset's file layout (one JSON object per line):

* ``full.json`` — the 4,000 rows a target is fine-tuned on; author ``k`` is rows ``20k … 20k+19``;
* ``forgetXX.json`` (``XX`` = 01, 05, 10: the last 2 / 10 / 20 authors of ``full``) and
  ``retainYY.json`` (``YY = 100 − XX``: the rest of ``full``, in order);
* ``forgetXX_perturbed.json`` and ``retain_perturbed.json`` (the first 400 rows of ``full``) —
  ``question, answer, paraphrased_question, paraphrased_answer, perturbed_answer`` (a list of
  wrong answers): what the Truth Ratio is computed on;
* ``real_authors_perturbed.json`` / ``world_facts_perturbed.json`` — ``question, answer,
  perturbed_answer``: model utility on real facts;
* ``holdoutXX.json`` — as many rows of other fictitious authors, never in ``full``: the
  non-members of the privacy-leak test.

Or a Hub dataset id (``locuslab/TOFU``): the ``*.json`` files are fetched with
``huggingface_hub.snapshot_download`` (which honours ``HF_HUB_OFFLINE`` and the local cache)
and read as above. The files are read with :mod:`json` only, so nothing is ever written beside
the data (no ``datasets`` cache).

Every check raises :class:`~tracing.errors.AmnesiaError` with one line naming the file, line,
field or value and what was expected: a missing file, an unknown split, a bad JSON line, a
missing or non-string field (``perturbed_answer`` must be a non-empty list of strings), a forget
set that is not the tail of ``full``, a retain set that is not ``full`` minus that tail, a
perturbed set whose questions/answers differ from the rows it perturbs, a holdout set whose size
is not the forget set's.

:func:`subset` keeps only some retain authors (a CPU-sized benchmark): the forget, perturbed
forget and holdout sets stay whole, so forget quality and privacy leak keep their meaning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tracing.errors import AmnesiaError
from unlearn.data import looks_like_hub_id, read_jsonl

from .config import DEFAULT_QUESTION_TEMPLATE

#: Question/answer pairs per author, consecutive in ``full.json``.
ROWS_PER_AUTHOR = 20
SPLITS = ("forget01", "forget05", "forget10")
QA_FIELDS = ("question", "answer")
PERTURBED_FIELDS = ("question", "answer", "paraphrased_question", "paraphrased_answer", "perturbed_answer")
UTILITY_FIELDS = ("question", "answer", "perturbed_answer")
ROW_FIELDS = ("full", "forget", "retain", "forget_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed", "holdout")
LAYOUT = "full.json, forgetXX.json, retainYY.json, forgetXX_perturbed.json, retain_perturbed.json, real_authors_perturbed.json, world_facts_perturbed.json, holdoutXX.json"


@dataclass(frozen=True)
class TofuData:
    """Validated TOFU data for one forget split.

    ``split`` is ``forget01`` / ``forget05`` / ``forget10``; each other field but ``source`` and
    ``authors`` is a list of row dicts as read from its file. ``authors`` holds the author number
    (0…199 in the benchmark) of each 20-row block of ``full``, in order: ``range(200)`` for the
    whole benchmark, fewer after :func:`subset`. ``forget`` is the tail of ``full``, ``retain``
    the rest; ``retain_perturbed`` covers the first rows of ``full`` (authors 0…19).
    """

    split: str
    source: str
    full: list[dict]
    forget: list[dict]
    retain: list[dict]
    forget_perturbed: list[dict]
    retain_perturbed: list[dict]
    real_authors_perturbed: list[dict]
    world_facts_perturbed: list[dict]
    holdout: list[dict]
    authors: tuple[int, ...]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(getattr(self, name))} rows" for name in ROW_FIELDS)
        return f"TofuData(split={self.split!r}, source={self.source!r}, {sizes}, authors={len(self.authors)})"

    @property
    def forget_authors(self) -> tuple[int, ...]:
        """Author numbers of the forget set (the last blocks of ``full``)."""
        return self.authors[len(self.retain) // ROWS_PER_AUTHOR :]

    @property
    def retain_authors(self) -> tuple[int, ...]:
        """Author numbers of the retain set, in ``full``'s order."""
        return self.authors[: len(self.retain) // ROWS_PER_AUTHOR]

    def author_of(self, position: int) -> int:
        """The author number of row ``position`` of ``full``."""
        if not 0 <= position < len(self.full):
            raise AmnesiaError(f"{self.source}: row {position} is not a row of full ({len(self.full)} rows)")
        return self.authors[position // ROWS_PER_AUTHOR]


def author_index(row_position: int) -> int:
    """The author of row ``row_position`` of the benchmark's ``full.json``: author k is rows 20k…20k+19."""
    if row_position < 0:
        raise AmnesiaError(f"row {row_position}: expected a row position ≥ 0")
    return row_position // ROWS_PER_AUTHOR


def author_rows(author: int) -> range:
    """Positions in the benchmark's ``full.json`` of author ``author``'s 20 rows."""
    if author < 0:
        raise AmnesiaError(f"author {author}: expected an author number ≥ 0")
    return range(author * ROWS_PER_AUTHOR, (author + 1) * ROWS_PER_AUTHOR)


def split_files(split: str) -> dict[str, str]:
    """The file name of each part of ``split`` (``forget01`` → ``retain99.json``, ``holdout01.json``, …)."""
    if split not in SPLITS:
        raise AmnesiaError(f"TOFU split {split!r}: expected one of {', '.join(SPLITS)}")
    pct = split.removeprefix("forget")
    return {
        "full": "full.json",
        "forget": f"{split}.json",
        "retain": f"retain{100 - int(pct):02d}.json",
        "forget_perturbed": f"{split}_perturbed.json",
        "retain_perturbed": "retain_perturbed.json",
        "real_authors_perturbed": "real_authors_perturbed.json",
        "world_facts_perturbed": "world_facts_perturbed.json",
        "holdout": f"holdout{pct}.json",
    }


# --------------------------------------------------------------------------- reading


def _field_problem(row: dict, key: str) -> str | None:
    """What is wrong with ``row[key]`` (``perturbed_answer`` a non-empty list of strings, the rest strings), or None."""
    value = row.get(key)
    got = "missing" if key not in row else f"{type(value).__name__} {value!r}"[:60]
    if key == "perturbed_answer":
        ok = isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
        return None if ok else f"field {key!r} must be a non-empty list of strings, got {got}"
    return None if isinstance(value, str) else f"field {key!r} must be a string, got {got}"


def read_rows(path: Path, fields: Sequence[str]) -> list[dict]:
    """The rows of one TOFU file, each checked for ``fields`` (``perturbed_answer`` a list of strings, the rest strings)."""
    if not path.is_file():
        raise AmnesiaError(f"{path}: missing (a TOFU folder holds {LAYOUT})")
    rows = read_jsonl(path)
    if not rows:
        raise AmnesiaError(f"{path}: no rows (expected one JSON object per line with fields {', '.join(fields)})")
    for i, row in enumerate(rows):
        for key in fields:
            problem = _field_problem(row, key)
            if problem:
                raise AmnesiaError(f"{path}: line {_line_of(path, i)}: {problem}")
    return rows


def _line_of(path: Path, row: int) -> int:
    """The 1-based line of the ``row``-th object of ``path`` (blank lines skipped, as :func:`read_jsonl`);
    read again only to name the line of an error."""
    text = path.read_text(encoding="utf-8")
    return [i for i, line in enumerate(text.splitlines(), start=1) if line.strip()][row]


def _qa(row: dict) -> tuple[str, str]:
    return row["question"], row["answer"]


def _check_same_rows(path: Path, rows: list[dict], expected: list[dict], what: str) -> None:
    """``rows`` have the question and answer of ``expected``, one for one (line numbers in ``path``)."""
    if len(rows) != len(expected):
        raise AmnesiaError(f"{path}: {len(rows)} rows, expected {len(expected)} ({what})")
    for i, (row, ref) in enumerate(zip(rows, expected)):
        if _qa(row) != _qa(ref):
            raise AmnesiaError(f"{path}: line {_line_of(path, i)}: question/answer {row['question'][:50]!r} differ from {what} (row {i})")


def _validate(root: Path, split: str, parts: dict[str, list[dict]]) -> None:
    files = split_files(split)
    full, forget, retain = parts["full"], parts["forget"], parts["retain"]
    if len(full) % ROWS_PER_AUTHOR:
        raise AmnesiaError(f"{root / files['full']}: {len(full)} rows, expected a multiple of {ROWS_PER_AUTHOR} (20 rows per author)")
    if len(forget) % ROWS_PER_AUTHOR or len(forget) >= len(full):
        raise AmnesiaError(
            f"{root / files['forget']}: {len(forget)} rows, expected whole authors ({ROWS_PER_AUTHOR} rows each) and fewer rows than full.json ({len(full)})"
        )
    tail = full[len(full) - len(forget) :]
    _check_same_rows(root / files["forget"], forget, tail, f"the last {len(forget)} rows of full.json (the forget set is the tail of full)")
    head = full[: len(full) - len(forget)]
    _check_same_rows(root / files["retain"], retain, head, f"full.json without its last {len(forget)} rows (the retain set)")
    _check_same_rows(root / files["forget_perturbed"], parts["forget_perturbed"], forget, files["forget"])
    retain_perturbed = parts["retain_perturbed"]
    if len(retain_perturbed) > len(retain):
        raise AmnesiaError(f"{root / files['retain_perturbed']}: {len(retain_perturbed)} rows, more than the retain set's {len(retain)}")
    _check_same_rows(root / files["retain_perturbed"], retain_perturbed, full[: len(retain_perturbed)], f"the first {len(retain_perturbed)} rows of full.json")
    if len(parts["holdout"]) != len(forget):
        raise AmnesiaError(f"{root / files['holdout']}: {len(parts['holdout'])} rows, expected {len(forget)} (as many as {files['forget']})")


def load_tofu_dir(root: str | Path, split: str = "forget01") -> TofuData:
    """Read and check a folder in the TOFU layout (see the module docstring)."""
    root = Path(root).expanduser()
    files = split_files(split)
    if not root.is_dir():
        raise AmnesiaError(f"{root}: TOFU data folder does not exist (expected {LAYOUT})")
    fields = {
        "full": QA_FIELDS, "forget": QA_FIELDS, "retain": QA_FIELDS, "holdout": QA_FIELDS,
        "forget_perturbed": PERTURBED_FIELDS, "retain_perturbed": PERTURBED_FIELDS,
        "real_authors_perturbed": UTILITY_FIELDS, "world_facts_perturbed": UTILITY_FIELDS,
    }
    parts = {name: read_rows(root / files[name], fields[name]) for name in files}
    _validate(root, split, parts)
    authors = tuple(range(len(parts["full"]) // ROWS_PER_AUTHOR))
    return TofuData(split=split, source=str(root), authors=authors, **parts)


def load_tofu(source: str | Path, split: str = "forget01") -> TofuData:
    """TOFU data for ``split`` from a local folder or a Hub dataset id such as ``locuslab/TOFU``."""
    split_files(split)  # an unknown split fails before any download
    root = Path(source).expanduser()
    if root.is_dir():
        return load_tofu_dir(root, split)
    if root.exists():
        raise AmnesiaError(f"{root}: is a file; expected a TOFU data folder ({LAYOUT}) or a Hugging Face dataset id")
    if not looks_like_hub_id(str(source)):
        raise AmnesiaError(f"{source}: TOFU data folder does not exist (expected {LAYOUT})")
    return load_tofu_dir(_download_tofu(str(source)), split)


def _download_tofu(repo_id: str) -> Path:
    """The ``*.json`` files of a Hub dataset repository (honours HF_HUB_OFFLINE and the local cache).

    :func:`unlearn.hub.check_hub_source` first answers in seconds whether the id can be fetched at
    all (as :func:`unlearn.data.load_semeval` does), so a mistyped folder is not a minute of retries.
    """
    from huggingface_hub import snapshot_download

    from unlearn.hub import check_hub_source

    check_hub_source(repo_id, repo_type="dataset", what="TOFU data")
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*.json"]))
    except Exception as exc:  # noqa: BLE001 - the Hub client raises many types; the user gets one line
        raise AmnesiaError(
            f"{repo_id}: not a local folder, and the Hub dataset could not be fetched ({type(exc).__name__}); pass a local copy in the TOFU layout"
        ) from None


# --------------------------------------------------------------------------- subsets


def _rows_of(rows: list[dict], block_authors: Sequence[int], keep: set[int]) -> list[dict]:
    """The rows of ``rows`` whose 20-row block belongs to an author in ``keep``."""
    return [row for i, row in enumerate(rows) if block_authors[i // ROWS_PER_AUTHOR] in keep]


def subset(data: TofuData, retain_authors: Sequence[int]) -> TofuData:
    """``data`` with only the retain rows of ``retain_authors`` (author numbers, as in :attr:`TofuData.authors`).

    The forget set, its perturbed rows and the holdout set stay whole, and so do the real-author
    and world-fact sets; ``retain`` keeps the rows of the given authors in their original order,
    ``retain_perturbed`` those of them among its authors (the first 20 of the benchmark), and
    ``full`` becomes that retain subset followed by the forget set, so the forget set is still
    its tail. E.g. ``subset(load_tofu(path, "forget01"), range(4))`` is a 120-row benchmark: 80
    retain rows (authors 0–3, all in ``retain_perturbed``), 40 forget rows (authors 198, 199).
    """
    chosen = list(retain_authors)
    if not chosen:
        raise AmnesiaError(f"{data.source}: TOFU subset needs at least one retain author")
    known = set(data.retain_authors)
    for author in chosen:
        if author in data.forget_authors:
            raise AmnesiaError(f"{data.source}: author {author} is in the forget set of {data.split}; expected a retain author")
        if author not in known:
            raise AmnesiaError(f"{data.source}: author {author} is not a retain author of {data.split} (have {min(known)}–{max(known)})")
    if len(set(chosen)) != len(chosen):
        raise AmnesiaError(f"{data.source}: retain authors {chosen} repeat an author (expected each at most once)")
    keep = set(chosen)
    retain = _rows_of(data.retain, data.authors, keep)
    retain_perturbed = _rows_of(data.retain_perturbed, data.authors, keep)
    kept_authors = tuple(a for a in data.retain_authors if a in keep) + data.forget_authors
    return replace(data, retain=retain, retain_perturbed=retain_perturbed, full=retain + list(data.forget), authors=kept_authors)


# --------------------------------------------------------------------------- prompts, names, references

_NAME = re.compile(r"\b([A-Z][\w'’-]+(?:\s+(?:[A-Z][\w'’-]+|al-|de|da|van|von|bin|ibn|el-))*\s+[A-Z][\w'’-]+)")
_POSSESSIVE = re.compile(r"['’]s$")


def question_text(question: str, prompt_format: str, template: str = DEFAULT_QUESTION_TEMPLATE) -> str:
    """The prompt text of a TOFU question before :func:`unlearn.prompts.render_prompts`: in raw
    format ``template`` with the question in it (default ``question + "\n"``); in chat format the
    question itself (the chat template wraps it)."""
    return template.replace("{question}", question) if prompt_format == "raw" else question


def author_name(rows: Sequence[dict]) -> str | None:
    """The name of the author of ``rows`` (one author's question/answer pairs): the capitalized
    multi-word phrase that most of them mention (TOFU's questions and answers name their author:
    "Basil Mahfouz Al-Kuwaiti" in 19 of his 20 questions). None when no phrase recurs."""
    counts: dict[str, int] = {}
    for row in rows:
        found = {_POSSESSIVE.sub("", m.group(1)) for text in (row["question"], row["answer"]) for m in _NAME.finditer(text)}
        for name in found:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return None
    name, n = max(counts.items(), key=lambda kv: (kv[1], len(kv[0])))
    return name if n >= 3 else None


def reference_holdout(data: TofuData) -> tuple[list[dict], str] | None:
    """Never-seen TOFU rows that are *not* the split's test holdout: the next larger holdout file
    minus the rows of this one (``holdout05`` minus ``holdout01`` for forget01: 160 rows of 8
    other fictitious authors; ``holdout10`` minus ``holdout05`` for forget05). Unlearning
    calibrates its forget level and selects its checkpoint on them; the privacy-leak test keeps
    ``holdoutXX`` to itself. None for forget10, whose holdout is the largest.
    """
    bigger = {"forget01": "holdout05.json", "forget05": "holdout10.json"}.get(data.split)
    if bigger is None:
        return None
    path = Path(data.source) / bigger
    if not path.is_file():
        return None
    test = {_qa(r) for r in data.holdout}
    rows = [r for r in read_rows(path, QA_FIELDS) if _qa(r) not in test]
    return (rows, str(path)) if rows else None
