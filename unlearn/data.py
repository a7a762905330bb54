"""The SemEval-2025 Task 4 data layer, used by every stage.

Three sources are accepted (see :func:`load_semeval`):

* a directory in the organizers' layout: ``data/{forget,retain}_{train,validation}-*.parquet``
  and, optionally, ``mia_data/{member,nonmember}.jsonl``;
* a directory with ``forget.jsonl`` / ``retain.jsonl`` (what the official evaluation script
  reads), optionally beside ``member.jsonl`` / ``nonmember.jsonl`` or a ``mia_data/`` folder;
* a Hugging Face dataset id, downloaded with ``huggingface_hub`` and then read as the first layout.

Every row is validated: the columns ``id, input, output, task, split`` exist, text fields are
strings, the id ends in ``sc<digit>`` (sentence completion) or ``qa<digit>`` (question answering),
the task is ``Task<N>``, the ``split`` column agrees with the file and no split is empty. A bad
file raises :class:`AmnesiaError` naming the file, the row and what was expected.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import datasets

from tracing.errors import AmnesiaError

COLUMNS = ("id", "input", "output", "task", "split")
SPLITS = ("forget_train", "forget_validation", "retain_train", "retain_validation")
ROW_TYPE_RE = re.compile(r"(sc|qa)(\d+)$")
TASK_RE = re.compile(r"^Task\d+$")
ROW_TYPES = {"sc": "sentence_completion", "qa": "question_answering"}


def row_kind(row_id) -> str:
    """``"sc"`` or ``"qa"`` from an id's suffix (``…sc1``, ``…qa3``; ids may contain quotes), ``""`` when it has neither."""
    match = ROW_TYPE_RE.search(str(row_id).strip())
    return match.group(1) if match else ""


def row_type(row_id: str) -> str:
    """:func:`row_kind`, for an id that must have one (one-line error otherwise)."""
    kind = row_kind(row_id)
    if not kind:
        raise AmnesiaError(f"id {row_id!r} must end in sc<digit> or qa<digit>")
    return kind


def subject_id(row_id: str) -> str:
    """The id without its row-type suffix and quotes: rows of one document/person share it."""
    return ROW_TYPE_RE.sub("", row_id.strip()).strip('"')


@dataclass
class SemEvalData:
    """Validated SemEval-layout data.

    ``splits`` maps split names (``forget_train``, ``forget_validation``, ``retain_train``,
    ``retain_validation``) to :class:`datasets.Dataset` objects with the five columns.
    ``mia`` maps ``member`` / ``nonmember`` to datasets with ``id`` and ``document`` (or is empty):
    the *test* membership-inference documents (``mia_data/``). ``mia_validation`` is the same
    for ``mia_data/validation/``: what training may look at (calibration, checkpoint selection).
    """

    source: str
    splits: dict[str, datasets.Dataset]
    mia: dict[str, datasets.Dataset] = field(default_factory=dict)
    mia_validation: dict[str, datasets.Dataset] = field(default_factory=dict)

    def get(self, kind: str, part: str = "train") -> datasets.Dataset:
        """Rows of ``kind`` (forget/retain) and ``part`` (train/validation)."""
        name = f"{kind}_{part}"
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise AmnesiaError(f"{self.source}: no {name} split (have: {have})")
        return self.splits[name]

    def summary(self) -> list[dict]:
        """Counts per split × task × row type, as a list of rows (see :func:`summarize`)."""
        return summarize(self)


def summarize(data: SemEvalData) -> list[dict]:
    """One dict per (split, task, row type): ``{split, task, row_type, rows}``, sorted."""
    out = []
    for name, ds in data.splits.items():
        counts = Counter((task, row_type(rid)) for task, rid in zip(ds["task"], ds["id"]))
        for (task, rtype), n in sorted(counts.items()):
            out.append({"split": name, "task": task, "row_type": rtype, "rows": n})
    for name, ds in data.mia.items():
        out.append({"split": f"mia_{name}", "task": "-", "row_type": "document", "rows": len(ds)})
    for name, ds in data.mia_validation.items():
        out.append({"split": f"mia_validation_{name}", "task": "-", "row_type": "document", "rows": len(ds)})
    return out


def format_summary(data: SemEvalData) -> str:
    """A plain-text table of :func:`summarize` plus per-split totals."""
    rows = summarize(data)
    lines = [f"data: {data.source}", f"{'split':<20}{'task':<8}{'type':<10}{'rows':>7}"]
    for r in rows:
        lines.append(f"{r['split']:<20}{r['task']:<8}{r['row_type']:<10}{r['rows']:>7}")
    totals = {name: len(ds) for name, ds in data.splits.items()}
    lines.append("totals: " + ", ".join(f"{k} {v:,}" for k, v in totals.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise AmnesiaError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise AmnesiaError(
            f"{path}: missing column {missing[0]!r} (expected columns {', '.join(COLUMNS)}; found {', '.join(table.column_names)})"
        )
    return table.select(list(COLUMNS)).to_pylist()


def read_jsonl(path: Path, required: Iterable[str] = ()) -> list[dict]:
    """Read a JSON-lines file; each line an object with the ``required`` fields (blank lines skipped)."""
    required = tuple(required)
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AmnesiaError(f"{path}: cannot read ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AmnesiaError(f"{path}: line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise AmnesiaError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        for key in required:
            if key not in obj:
                raise AmnesiaError(f"{path}: line {lineno}: missing field {key!r} (expected fields {', '.join(required)})")
        rows.append(obj)
    return rows


def _validate_rows(rows: list[dict], where: str, split_kind: str | None) -> datasets.Dataset:
    """Check every row; return a Dataset with exactly the five columns, as strings."""
    if not rows:
        raise AmnesiaError(f"{where}: split has no rows (expected at least one)")
    seen: dict[str, int] = {}
    clean = {c: [] for c in COLUMNS}
    for i, row in enumerate(rows):
        for col in COLUMNS:
            value = row.get(col)
            if not isinstance(value, str):
                got = "missing" if col not in row else f"{type(value).__name__} {value!r}"[:60]
                raise AmnesiaError(f"{where}: row {i} (id {row.get('id')!r}): column {col!r} must be a string, got {got}")
        rid = row["id"]
        if not row_kind(rid):
            raise AmnesiaError(f"{where}: row {i}: id {rid!r} must end in sc<digit> or qa<digit>")
        if not TASK_RE.match(row["task"]):
            raise AmnesiaError(f"{where}: row {i} (id {rid!r}): task {row['task']!r} is not a task name (expected Task1, Task2, Task3, …)")
        if row["split"] not in ("forget", "retain"):
            raise AmnesiaError(f"{where}: row {i} (id {rid!r}): split {row['split']!r} must be 'forget' or 'retain'")
        if split_kind is not None and row["split"] != split_kind:
            raise AmnesiaError(f"{where}: row {i} (id {rid!r}): split {row['split']!r} in a {split_kind} file")
        for col, what in (("input", "the prompt"), ("output", "the expected answer; an empty one scores 0, which would read as forgotten")):
            if not row[col].strip():
                raise AmnesiaError(f"{where}: row {i} (id {rid!r}): {col!r} is empty (expected {what})")
        if rid in seen:
            raise AmnesiaError(f"{where}: row {i}: id {rid!r} repeats row {seen[rid]} (ids must be unique)")
        seen[rid] = i
        for col in COLUMNS:
            clean[col].append(row[col])
    return datasets.Dataset.from_dict(clean)


def _load_mia(folder: Path) -> dict[str, datasets.Dataset]:
    """``member.jsonl`` / ``nonmember.jsonl`` from ``folder`` (both or neither)."""
    files = {name: folder / f"{name}.jsonl" for name in ("member", "nonmember")}
    present = [n for n, p in files.items() if p.is_file()]
    if not present:
        return {}
    if len(present) == 1:
        missing = "nonmember" if present == ["member"] else "member"
        raise AmnesiaError(f"{folder}: has {present[0]}.jsonl but no {missing}.jsonl (membership inference needs both)")
    out = {}
    for name, path in files.items():
        rows = read_jsonl(path, required=("document",))
        if not rows:
            raise AmnesiaError(f"{path}: no documents (expected one JSON object per line with a 'document' field)")
        for lineno, row in enumerate(rows, start=1):
            if not isinstance(row["document"], str) or not row["document"].strip():
                raise AmnesiaError(f"{path}: document {lineno}: 'document' must be a non-empty string")
        columns = {"id": [str(r.get("id", i)) for i, r in enumerate(rows)], "document": [r["document"] for r in rows]}
        if any("prompt" in r for r in rows):  # optional: the part of each document the model reads as context
            for lineno, row in enumerate(rows, start=1):
                prompt = row.get("prompt")
                if not isinstance(prompt, str) or not row["document"].startswith(prompt) or len(prompt) >= len(row["document"]):
                    raise AmnesiaError(f"{path}: document {lineno}: 'prompt' must be a string that begins its 'document' and leaves text after it "
                                       "(give it on every line or on none)")
            columns["prompt"] = [r["prompt"] for r in rows]
        out[name] = datasets.Dataset.from_dict(columns)
    return out


def load_mia(path: str | Path) -> dict[str, datasets.Dataset]:
    """Membership-inference documents from a folder with ``member.jsonl`` and ``nonmember.jsonl``."""
    folder = Path(path)
    if not folder.is_dir():
        raise AmnesiaError(f"{folder}: MIA folder does not exist (expected member.jsonl and nonmember.jsonl in it)")
    mia = _load_mia(folder)
    if not mia:
        raise AmnesiaError(f"{folder}: no member.jsonl / nonmember.jsonl (expected both, one JSON object per line with a 'document' field)")
    return mia


def _check_ids_across_splits(splits: dict[str, datasets.Dataset], where: str) -> None:
    """An id in two splits (forget and retain, or train and validation) would be scored twice and
    both trained away and kept: refuse it, naming the id and the splits."""
    first: dict[str, str] = {}
    for name, ds in splits.items():
        for rid in ds["id"]:
            if rid in first:
                raise AmnesiaError(f"{where}: id {rid!r} is in {first[rid]} and in {name} (an id names one row of one split)")
            first[rid] = name


def _load_organizers_layout(root: Path) -> SemEvalData:
    splits = {}
    for name in SPLITS:
        files = sorted((root / "data").glob(f"{name}-*.parquet"))
        if not files:
            continue
        rows: list[dict] = []
        for f in files:
            rows.extend(_read_parquet(f))
        where = str(files[0]) if len(files) == 1 else f"{root / 'data'}/{name}-*.parquet"
        splits[name] = _validate_rows(rows, where, name.split("_")[0])
    for kind in ("forget", "retain"):
        if not any(k.startswith(kind) for k in splits):
            raise AmnesiaError(f"{root / 'data'}: no {kind}_train-*.parquet or {kind}_validation-*.parquet files")
    _check_ids_across_splits(splits, str(root / "data"))
    return SemEvalData(source=str(root), splits=splits, mia=_load_mia(root / "mia_data"), mia_validation=_load_mia(root / "mia_data" / "validation"))


def _load_jsonl_layout(root: Path) -> SemEvalData:
    splits = {}
    for kind in ("forget", "retain"):
        path = root / f"{kind}.jsonl"
        if not path.is_file():
            raise AmnesiaError(f"{root}: has no {kind}.jsonl (a jsonl-layout folder needs forget.jsonl and retain.jsonl)")
        splits[f"{kind}_train"] = _validate_rows(read_jsonl(path), str(path), kind)
    _check_ids_across_splits(splits, str(root))
    mia = _load_mia(root / "mia_data") or _load_mia(root)
    return SemEvalData(source=str(root), splits=splits, mia=mia, mia_validation=_load_mia(root / "mia_data" / "validation"))


def load_split_dir(path: str | Path, kind: str) -> datasets.Dataset:
    """All ``*.parquet`` and ``*.jsonl`` files of a folder (or one file) as one validated split.

    This is how the shared task's submission entry point receives its forget and retain sets.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(list(path.glob("*.parquet")) + list(path.glob("*.jsonl")))
    else:
        raise AmnesiaError(f"{path}: {kind} data does not exist (expected a folder of .parquet/.jsonl files)")
    if not files:
        raise AmnesiaError(f"{path}: no .parquet or .jsonl files for the {kind} set")
    rows: list[dict] = []
    for f in files:
        rows.extend(_read_parquet(f) if f.suffix == ".parquet" else read_jsonl(f))
    return _validate_rows(rows, str(path), kind)


def looks_like_hub_id(source: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source)) and not source.startswith((".", "/", "~"))


def load_semeval(source: str | Path) -> SemEvalData:
    """Load and validate SemEval-2025 Task 4 style data from a folder or a Hub dataset id."""
    root = Path(source).expanduser()
    if root.is_dir():
        if (root / "data").is_dir():
            return _load_organizers_layout(root)
        if (root / "forget.jsonl").exists() or (root / "retain.jsonl").exists():
            return _load_jsonl_layout(root)
        raise AmnesiaError(
            f"{root}: not a SemEval data folder (expected data/{{forget,retain}}_{{train,validation}}-*.parquet or forget.jsonl + retain.jsonl)"
        )
    if root.exists():
        raise AmnesiaError(f"{root}: is a file; expected a SemEval data folder or a Hugging Face dataset id")
    if not looks_like_hub_id(str(source)):
        raise AmnesiaError(f"{source}: data folder does not exist")
    return _load_organizers_layout(_download_dataset(str(source)))


def _download_dataset(repo_id: str) -> Path:
    """Fetch a dataset repository from the Hub (honours HF_HUB_OFFLINE and the local cache)."""
    from huggingface_hub import snapshot_download

    from .hub import check_hub_source

    check_hub_source(repo_id, repo_type="dataset", what="data")
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["data/*", "mia_data/*"]))
    except Exception as exc:
        raise AmnesiaError(
            f"{repo_id}: not a local folder, and the Hub dataset could not be fetched ({type(exc).__name__}); "
            "pass a local copy in the organizers' layout"
        ) from None
