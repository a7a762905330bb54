"""Is this name a Hub id we can fetch, or a mistyped folder? Answered in seconds, never a retry storm.

``--model amnesia-demo/targett`` is not a folder, so it reads as a Hub id; left to
transformers, an unreachable Hub is retried for about a minute before a long error. Before any
download, :func:`check_hub_source` asks once, with a short timeout: is the id in the local Hub
cache, or does the Hub answer and have it? When neither, one line says both (the folder does not
exist, and the Hub is offline / unreachable / has no such repository) and names the nearest
existing folder when there is one.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

from tracing.errors import AmnesiaError

PROBE_TIMEOUT_S = 5.0


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (as huggingface_hub read it, or set since)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached(repo_id: str, repo_type: str = "model") -> bool:
    """True when a snapshot of ``repo_id`` is in the local Hub cache (no network)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, repo_type=repo_type, local_files_only=True)
        return True
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, a malformed id, ...: not cached
        return False


@functools.lru_cache(maxsize=64)
def probe(repo_id: str, repo_type: str = "model", timeout: float = PROBE_TIMEOUT_S) -> str:
    """One request to the Hub: ``found``, ``missing`` (it answered: no such repository) or ``unreachable``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    info = api.dataset_info if repo_type == "dataset" else api.model_info
    try:
        info(repo_id, timeout=timeout)
        return "found"
    except GatedRepoError:  # exists; the download will ask for a token
        return "found"
    except RepositoryNotFoundError:
        return "missing"
    except HfHubHTTPError as exc:  # the Hub answered with another status (401 for a private repo, ...)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return "found" if status in (401, 403) else "unreachable"
    except Exception:  # noqa: BLE001 - DNS, refused, timeout, proxy: the Hub cannot be asked
        return "unreachable"


def nearest_folder(name: str) -> Path | None:
    """The existing folder closest to ``name``: the deepest existing ancestor, then the closest child name."""
    path = Path(name).expanduser()
    parts = path.parts
    base = Path(parts[0]) if path.is_absolute() else Path(".")
    rest = list(parts[1:] if path.is_absolute() else parts)
    while rest and (base / rest[0]).is_dir():
        base, rest = base / rest[0], rest[1:]
    if not rest:
        return None
    try:
        children = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    match = difflib.get_close_matches(rest[0], children, n=1, cutoff=0.6)
    if not match:
        return None
    guess = base / match[0]
    deeper = guess.joinpath(*rest[1:])
    return deeper if deeper.exists() else guess


def check_hub_source(name: str, *, repo_type: str = "model", what: str = "model") -> None:
    """Return when ``name`` (not an existing path) can be fetched: cached, or on a Hub that answers.

    Otherwise raise one :class:`AmnesiaError` line that says the folder does not exist and why
    the Hub cannot supply it, with the nearest existing folder as a suggestion.
    """
    if cached(name, repo_type):
        return
    near = nearest_folder(name)
    hint = f" (did you mean {near}?)" if near is not None else ""
    folder = f"{name}: no such {what} folder{hint}"
    if offline():
        raise AmnesiaError(f"{folder}, and not in the local Hub cache while offline (HF_HUB_OFFLINE=1)")
    status = probe(name, repo_type)
    if status == "missing":
        raise AmnesiaError(f"{folder}, and no {repo_type} of that name on the Hugging Face Hub")
    if status == "unreachable":
        raise AmnesiaError(f"{folder}, and the Hugging Face Hub is unreachable to look it up as a Hub id")
