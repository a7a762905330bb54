"""Atomic output: everything we write appears complete or not at all.

A file or folder is first written to a temporary sibling (same directory, so the final
``os.replace`` is atomic on POSIX) and renamed into place only when the writer finished
without an exception. An interrupted writer leaves at most a ``.tmp-*`` sibling, which no
reader takes for a finished output (``amnesia run`` removes those in its run directory).
The finished output gets the usual permissions (``0o777`` / ``0o666`` minus the umask), not
the private ones of ``tempfile`` (or of safetensors, which writes its files ``0o600``).

:func:`check_output_dir` is the one rule for output folders a command owns (a model folder, a
trace folder, a world): absent or empty is fine; an existing one needs ``overwrite``; and
``overwrite`` replaces only a folder that command wrote (one holding its marker file), so a
mistyped ``--out ~ --overwrite`` cannot delete a home directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import AmnesiaError


def _umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``); 0o022 when unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _normal_permissions(folder: Path) -> None:
    """Give every file and folder under ``folder`` the umask's permissions: libraries that write
    privately (safetensors writes 0o600) do not make a shared model folder unreadable."""
    mask = _umask()
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        mode = 0o777 if path.is_dir() or path.stat().st_mode & 0o100 else 0o666
        os.chmod(path, mode & ~mask)


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or below it (symlinks resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def check_creatable(out: str | os.PathLike, *, option: str = "--out") -> None:
    """Refuse, before any work, an output that cannot be created: its nearest existing ancestor is a
    file, or a folder where nothing can be written (tried with an empty folder, removed at once)."""
    out = Path(out)
    ancestor = out.expanduser().absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise AmnesiaError(f"{option} {out}: cannot be created: {ancestor} is a file, not a folder")
    st = ancestor.stat()
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".amnesia-probe-", dir=ancestor))
    except OSError as exc:
        raise AmnesiaError(f"{option} {out}: cannot be created: nothing can be written in {ancestor} ({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):  # the probe leaves no trace, not even the folder's modification time
        os.utime(ancestor, ns=(st.st_atime_ns, st.st_mtime_ns))


def check_output_path(out: Path, model_path: Path | None, data_paths: Sequence[Path], *, what: str = "the unlearned model") -> None:
    """Refuse an output that cannot be created (:func:`check_creatable`) or that lies in (or over,
    or around) the input model's folder or the data.

    ``model_path`` None or missing and data paths that do not exist (Hub ids) are not checked.
    """
    out = Path(out)
    check_creatable(out)
    if model_path is not None and Path(model_path).exists():
        model_path = Path(model_path)
        if is_inside(out, model_path):
            raise AmnesiaError(f"--out {out}: is inside the input model's folder {model_path}; write {what} somewhere else")
        if is_inside(model_path, out):
            raise AmnesiaError(f"--out {out}: contains the input model {model_path}; replacing it would delete the input")
    for data in data_paths:
        data = Path(data)
        if not data.exists():
            continue
        if data.is_dir() and is_inside(out, data):
            raise AmnesiaError(f"--out {out}: is inside the data folder {data}; write {what} somewhere else")
        if is_inside(data, out):
            raise AmnesiaError(f"--out {out}: contains the data {data}; replacing it would delete the data")


def check_output_dir(out: str | os.PathLike, *, overwrite: bool, marker: str, command: str) -> None:
    """Raise :class:`AmnesiaError` unless ``out`` may be (re)written by ``command``.

    Absent or an empty folder: fine. A file: never. An existing folder: only with ``overwrite``,
    and only when it holds ``marker`` (the file ``command`` writes into every output of its own).
    """
    out = Path(out)
    recover_output(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise AmnesiaError(f"--out {out}: is a file; expected a folder to write into")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise AmnesiaError(f"{out} already exists; pass --overwrite to replace it")
    if not (out / marker).is_file():
        raise AmnesiaError(
            f"--out {out}: is not a folder written by `amnesia {command}` (it has no {marker}); "
            "--overwrite only replaces such folders, so choose another --out"
        )


def _siblings(dest: Path, kind: str) -> list[Path]:
    """``.tmp-NAME-XXXXXXXX`` / ``.old-NAME-XXXXXXXX`` siblings of ``dest`` (tempfile's 8-character names, exactly)."""
    pattern = re.compile(re.escape(f".{kind}-{dest.name}-") + r"[a-z0-9_]{8}")
    if not dest.parent.is_dir():
        return []
    return sorted(p for p in dest.parent.iterdir() if pattern.fullmatch(p.name))


def recover_output(dest: str | os.PathLike) -> None:
    """Undo what a kill left around ``dest``: an old output moved aside by :func:`atomic_path` and not
    yet replaced comes back (the old complete output, not none), and temporary siblings go."""
    dest = Path(dest)
    for old in _siblings(dest, "old"):
        inner = old / dest.name
        if (inner.exists() or inner.is_symlink()) and not (dest.exists() or dest.is_symlink()):
            os.replace(inner, dest)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in _siblings(dest, "tmp"):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, directory: bool = False, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``dest``; on success rename it to ``dest``.

    With ``directory=True`` the temporary path is an (empty) directory. With
    ``overwrite=False`` an existing ``dest`` is an :class:`AmnesiaError` (checked before and
    after writing; an empty destination folder counts as absent). An existing destination
    folder is replaced whole: moved aside to ``.old-NAME-*``, the new one renamed in, the old one
    removed; a kill between the two renames leaves the old one aside, which the next write to
    ``dest`` (or :func:`check_output_dir`) puts back first (:func:`recover_output`), together with
    removing the ``.tmp-NAME-*`` a killed write left.
    """
    dest = Path(dest)
    recover_output(dest)

    def taken() -> bool:
        return dest.exists() and not (directory and dest.is_dir() and not any(dest.iterdir()))

    if not overwrite and taken():
        raise AmnesiaError(f"{dest} already exists; pass --overwrite to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".tmp-{dest.name}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            _normal_permissions(tmp)
        if dest.is_dir() and not dest.is_symlink():
            if not overwrite and taken():
                raise AmnesiaError(f"{dest} already exists; pass --overwrite to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".old-{dest.name}-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if not directory:
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented, strict JSON (NaN → null), atomically."""
    text = json.dumps(_finite(json.loads(json.dumps(obj, default=_json_default))), indent=2, sort_keys=False)
    return write_text(path, text + "\n", overwrite=overwrite)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
