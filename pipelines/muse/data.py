"""MUSE's data, read from a folder in the authors' layout (github.com/swj0419/muse_bench ``data/news``,
``data/books``; the Hub dataset ``muse-bench/MUSE-News`` / ``MUSE-Books`` holds the same files as
subsets), every file one JSON list:

* ``verbmem/forget.json`` — ``{prompt, gt}``: a prefix of a forget article and its true continuation (C1);
* ``knowmem/forget_qa.json``, ``knowmem/retain2_qa.json`` (the authors' ``constants.py`` names it
  ``retain_qa.json``; either is read) — ``{question, answer}`` about forget / retain articles (C2, C4),
  each with ``*_icl.json``: the in-context examples prepended to every question (MUSE-Books has none:
  its KnowMem is not measured);
* ``privleak/forget.json``, ``privleak/holdout.json``, ``privleak/retain2.json`` (or ``retain.json``)
  — articles (strings): forgotten members, never-seen articles, kept members (C3);
* ``raw/forget.json`` — the forget corpus (strings), when present (what unlearning reads; its
  empty strings are skipped: MUSE-News has one); ``raw/retain1.json`` (or ``raw/retain.json``) —
  the retain corpus MUSE's unlearning keeps, and ``raw/holdout.json`` — never-seen articles, when
  present (a run on MUSE's own rows reads them; the CPU-sized run does not);
* ``scal/forget_1.json``, ``scal/forget_2.json``, … and ``sust/forget_1.json``, … — MUSE's forget
  sets for C5 scalability (each containing the one before) and C6 sustainability (disjoint,
  unlearned one after another), articles, when present (numbered from 1 without a gap).

Each problem is one line naming the file, the item and what was expected. Only :mod:`json` reads
the files: nothing is written beside the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tracing.errors import AmnesiaError

CORPORA = ("news", "books")


@dataclass(frozen=True)
class MuseData:
    """One MUSE corpus: every file :func:`load_muse` read (None: the file is not in the folder)."""

    source: str
    verbmem: list[dict]
    knowmem_forget: list[dict] | None
    knowmem_forget_icl: list[dict] | None
    knowmem_retain: list[dict] | None
    knowmem_retain_icl: list[dict] | None
    privleak_forget: list[str]
    privleak_holdout: list[str]
    privleak_retain: list[str] | None
    raw_forget: list[str] | None
    raw_retain: list[str] | None = None
    raw_holdout: list[str] | None = None
    scal: list[list[str]] | None = None
    sust: list[list[str]] | None = None

    def __repr__(self) -> str:
        counts = {k: len(v) for k, v in vars(self).items() if isinstance(v, list) and k not in ("scal", "sust")}
        counts |= {f"{k} folds": len(v) for k in ("scal", "sust") if (v := getattr(self, k)) is not None}
        return f"MuseData(source={self.source!r}, " + ", ".join(f"{k}={n} rows" for k, n in counts.items()) + ")"


def _read(root: Path, names: tuple[str, ...], what: str, *, required: bool) -> tuple[Path | None, list | None]:
    for name in names:
        path = root / name
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise AmnesiaError(f"{path}: not readable as JSON ({str(err).splitlines()[0]}); expected a JSON list of {what}") from None
            if not isinstance(value, list) or not value:
                raise AmnesiaError(f"{path}: expected a non-empty JSON list of {what}, got {type(value).__name__}{' (empty)' if value == [] else ''}")
            return path, value
    if required:
        raise AmnesiaError(f"{root}: no {' or '.join(names)} (expected MUSE's layout: verbmem/, knowmem/, privleak/ — see docs/muse.md)")
    return None, None


def _texts(path: Path, rows: list, *, skip_empty: bool = False) -> list[str]:
    for i, row in enumerate(rows):
        if not isinstance(row, str) or (not row.strip() and not skip_empty):
            raise AmnesiaError(f"{path}: item {i} is {type(row).__name__ if not isinstance(row, str) else 'an empty string'} (expected a non-empty article text)")
    return [row for row in rows if row.strip()]


def _records(path: Path, rows: list, fields: tuple[str, str]) -> list[dict]:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise AmnesiaError(f"{path}: item {i} is a {type(row).__name__} (expected an object with {' and '.join(fields)})")
        for field in fields:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise AmnesiaError(f"{path}: item {i}: field {field!r} is {'missing' if field not in row else repr(row[field])[:40]} (expected a non-empty string)")
    return [{f: row[f] for f in fields} for row in rows]


def load_muse(path: str | Path) -> MuseData:
    """Read and check a MUSE folder (module docstring); a one-line :class:`AmnesiaError` on any problem."""
    root = Path(path)
    if not root.is_dir():
        raise AmnesiaError(f"{root}: not a folder (expected MUSE's layout: verbmem/, knowmem/, privleak/, e.g. ../shared/data/muse_news)")
    p, v = _read(root, ("verbmem/forget.json",), "{prompt, gt} objects", required=True)
    verbmem = _records(p, v, ("prompt", "gt"))
    knowmem = {}
    for part, names in (("forget", ("knowmem/forget_qa.json",)), ("retain", ("knowmem/retain2_qa.json", "knowmem/retain_qa.json"))):
        p, v = _read(root, names, "{question, answer} objects", required=False)
        qa = _records(p, v, ("question", "answer")) if v is not None else None
        icl_names = tuple(n.replace(".json", "_icl.json") for n in names)
        p2, v2 = _read(root, icl_names, "{question, answer} objects", required=False)
        icl = _records(p2, v2, ("question", "answer")) if v2 is not None else None
        if (qa is None) != (icl is None):
            raise AmnesiaError(f"{root}: {p or p2} without {' or '.join(icl_names if qa is not None else names)} (expected the QA file and its in-context examples together)")
        knowmem[part], knowmem[f"{part}_icl"] = qa, icl
    privleak = {}
    for part, names, required in (("forget", ("privleak/forget.json",), True), ("holdout", ("privleak/holdout.json",), True),
                                  ("retain", ("privleak/retain2.json", "privleak/retain.json"), False)):
        p, v = _read(root, names, "article texts", required=required)
        privleak[part] = _texts(p, v) if v is not None else None
    raw = {}
    for part, names in (("forget", ("raw/forget.json",)), ("retain", ("raw/retain1.json", "raw/retain.json")), ("holdout", ("raw/holdout.json",))):
        p, v = _read(root, names, "article texts", required=False)
        raw[part] = _texts(p, v, skip_empty=True) if v is not None else None
    folds = {}
    for mode in ("scal", "sust"):
        sets = []
        while (found := _read(root, (f"{mode}/forget_{len(sets) + 1}.json",), "article texts", required=False))[1] is not None:
            sets.append(_texts(*found, skip_empty=True))
        if not sets and any((root / mode).glob("forget_*.json")):
            raise AmnesiaError(f"{root / mode}: no forget_1.json (expected MUSE's {mode} forget sets numbered forget_1.json, forget_2.json, ...)")
        folds[mode] = sets or None
    return MuseData(source=str(root), verbmem=verbmem, knowmem_forget=knowmem["forget"], knowmem_forget_icl=knowmem["forget_icl"],
                    knowmem_retain=knowmem["retain"], knowmem_retain_icl=knowmem["retain_icl"], privleak_forget=privleak["forget"],
                    privleak_holdout=privleak["holdout"], privleak_retain=privleak["retain"], raw_forget=raw["forget"], raw_retain=raw["retain"],
                    raw_holdout=raw["holdout"], scal=folds["scal"], sust=folds["sust"])


def corpus_of(path: str | Path) -> str | None:
    """``news`` or ``books`` when the folder's name says so (``muse_news``, ``data/books``), else None."""
    name = Path(path).name.lower()
    return next((c for c in CORPORA if c in name), None)
