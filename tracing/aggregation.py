"""Average indirect effects (AIE) over facts, by ROME's token groups, with 95 % intervals.

Token groups of a fact with subject tokens ``[s, e)`` and ``T`` tokens (ROME's figure 2):

========================  ==========================================
``first_subject``         ``s``
``middle_subject``        ``s+1 .. e-2`` (empty for 1–2 token subjects)
``last_subject``          ``e-1``
``first_subsequent``      ``e`` (when the subject is not the last token)
``further``               ``e+1 .. T-2``
``last``                  ``T-1``
========================  ==========================================

As in ROME, ``first_subsequent`` may also be the last token. A group with several tokens
contributes its per-fact mean, so every fact weighs the same; the interval is the normal
approximation ``mean ± 1.96 · sd / √n`` over the facts that have the group (``n`` is reported;
the interval collapses to the mean when ``n = 1``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .config import TOKEN_GROUPS
from .facts import token_groups
from .tracer import FactTrace

GROUP_LABELS = {
    "first_subject": "first subject token",
    "middle_subject": "middle subject tokens",
    "last_subject": "last subject token",
    "first_subsequent": "first subsequent token",
    "further": "further tokens",
    "last": "last token",
}
Z95 = 1.959963984540054


def mean_ci(values: Sequence[float] | np.ndarray) -> dict:
    """Mean and normal-approximation 95 % interval over axis 0 (``n`` values)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = x.mean(axis=0)
    half = Z95 * x.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
    return {"mean": mean.tolist(), "ci_low": (mean - half).tolist(), "ci_high": (mean + half).tolist(), "n": int(n)}


def group_effects(trace: FactTrace, kind: str) -> dict[str, np.ndarray]:
    """``{group: IE per layer}`` of one fact (mean over the group's tokens); empty groups left out."""
    table = trace.ie[kind]
    return {g: table[pos].mean(axis=0) for g, pos in token_groups(table.shape[0], trace.subject_range).items() if pos}


def aggregate(traces: Sequence[FactTrace]) -> dict:
    """The summary of a tracing run (strict-JSON friendly).

    ``{"n_facts", "kinds", "groups", "n_layers", "p_clean", "p_corrupt", "te",
    "aie": {kind: {group: {"mean": [L], "ci_low": [L], "ci_high": [L], "n"}}}}``
    where ``p_clean``, ``p_corrupt`` and ``te`` are ``{"mean", "ci_low", "ci_high", "n"}``.
    """
    if not traces:
        raise ValueError("no traces to aggregate")
    kinds = list(traces[0].ie)
    aie: dict[str, dict] = {}
    for kind in kinds:
        per_group: dict[str, list[np.ndarray]] = {g: [] for g in TOKEN_GROUPS}
        for tr in traces:
            for g, v in group_effects(tr, kind).items():
                per_group[g].append(v)
        aie[kind] = {g: mean_ci(np.stack(v) if v else np.zeros((0,))) for g, v in per_group.items()}
    summary = {
        "n_facts": len(traces),
        "kinds": kinds,
        "groups": list(TOKEN_GROUPS),
        "n_layers": traces[0].n_layers,
        "p_clean": mean_ci([t.p_clean for t in traces]),
        "p_corrupt": mean_ci([t.p_corrupt for t in traces]),
        "te": mean_ci([t.te for t in traces]),
        "aie": aie,
    }
    screened = [t for t in traces if t.screen is not None]
    if screened:
        summary["agreement"] = agreement(screened)
    return summary


def agreement(traces: Sequence[FactTrace]) -> dict:
    """How well method ``auto``'s attribution screen ranks layers like its exact tracing.

    Per kind, over the exactly traced tokens of every fact: ``per_fact``, the mean Spearman
    correlation of the two per-layer curves (one per fact and token; constant curves, which
    have no ranking, are left out and counted in ``undefined``), and ``aie``, the Spearman
    correlation of the two curves averaged over facts and tokens (the AIE curve selection reads).
    """
    out = {}
    for kind in traces[0].screen:
        per_fact, undefined, exact_rows, screen_rows = [], 0, [], []
        for tr in traces:
            exact = tr.ie[kind][tr.exact_positions]
            screen = tr.screen[kind]
            for a, b in zip(exact, screen):
                rho = spearman(a, b) if len(a) >= 2 else float("nan")
                if rho == rho:
                    per_fact.append(rho)
                else:
                    undefined += 1
            exact_rows.append(exact.mean(axis=0))
            screen_rows.append(screen.mean(axis=0))
        aie_exact, aie_screen = np.mean(exact_rows, axis=0), np.mean(screen_rows, axis=0)
        rho_aie = spearman(aie_exact, aie_screen) if len(aie_exact) >= 2 else float("nan")
        out[kind] = {
            "per_fact": float(np.mean(per_fact)) if per_fact else None,
            "aie": rho_aie if rho_aie == rho_aie else None,
            "n": len(per_fact),
            "undefined": undefined,
        }
    return out


def layer_profile(summary: dict, kind: str = "mlp", group: str = "last_subject") -> list[float]:
    """The AIE per layer of ``kind`` at token ``group`` (the curve layer selection reads)."""
    try:
        mean = summary["aie"][kind][group]["mean"]
    except KeyError:
        raise KeyError(f"summary has no AIE for kind {kind!r} and group {group!r}") from None
    if mean is None:
        raise KeyError(f"no fact has tokens in group {group!r}")
    return [float(v) for v in mean]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    x, y = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.size < 2:
        raise ValueError("spearman needs two sequences of the same length >= 2")
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks
