"""ROME-style figures: per-fact heatmaps and the AIE curves (matplotlib, Agg backend).

* :func:`plot_fact` — the three kinds side by side, token × layer, each cell the probability
  of the answer after restoring that site (colour floor = the corrupted run's ``p*``), subject
  tokens marked with ``*``; colour maps Purples (hidden), Greens (MLP), Reds (attention).
* :func:`plot_aie` — per kind, the AIE per layer of each token group with its 95 % band.

Both write atomically (:func:`tracing.io.atomic_path`) and return the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .aggregation import GROUP_LABELS, TOKEN_GROUPS
from .io import atomic_path
from .tracer import FactTrace

CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
TITLES = {"hidden": "single restored layer", "mlp": "MLP", "attn": "Attn"}
GROUP_COLORS = {
    "first_subject": "#1f77b4",
    "middle_subject": "#17becf",
    "last_subject": "#d62728",
    "first_subsequent": "#ff7f0e",
    "further": "#7f7f7f",
    "last": "#2ca02c",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(token: str) -> str:
    text = token.replace("\n", "\\n").replace("$", r"\$")
    return text if text.strip() else repr(token)


def _short(model: str) -> str:
    """``/runs/x/target`` → ``target``; ``org/name`` stays."""
    parts = [p for p in str(model).replace("\\", "/").split("/") if p]
    return parts[-1] if len(parts) > 2 or str(model).startswith((".", "/", "~")) else str(model)


def _save(fig, path: str | os.PathLike, dpi: int) -> Path:
    plt = _pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def layer_axis(ax, n_layers: int) -> None:
    """Integer layer ticks that stay readable at any depth: about 10 labels, a minor tick on every layer."""
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=min(n_layers, 10), integer=True))
    if n_layers > 10:
        ax.xaxis.set_minor_locator(MultipleLocator(1))
    ax.set_xlim(-0.5, n_layers - 0.5)


def plot_fact(trace: FactTrace, path: str | os.PathLike, *, model: str = "", dpi: int = 110) -> Path:
    """Heatmaps of one fact's restored probabilities, one panel per traced kind."""
    plt = _pyplot()
    kinds = list(trace.ie)
    T, L = trace.ie[kinds[0]].shape
    s, e = trace.subject_range
    exact = set(trace.exact_positions) if trace.exact_positions is not None else None
    labels = [("» " if exact is not None and i in exact else "") + _label(t) + ("*" if s <= i < e else "") for i, t in enumerate(trace.tokens)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.3 * len(kinds) + 0.8, 0.28 * T + 1.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        restored = trace.ie[kind] + trace.p_corrupt
        h = ax.pcolor(restored, cmap=CMAPS.get(kind, "Greys"), vmin=min(trace.p_corrupt, float(restored.min())), vmax=max(float(restored.max()), trace.p_corrupt + 1e-6))
        ax.invert_yaxis()
        ax.set_yticks([0.5 + i for i in range(T)])
        ax.set_yticklabels(labels if ax is axes[0][0] else [""] * T, fontsize=8)
        step = max(1, L // 8)
        ax.set_xticks([0.5 + i for i in range(0, L, step)])
        ax.set_xticklabels([str(i) for i in range(0, L, step)], fontsize=8)
        if kind == "hidden":
            ax.set_title("Restoring state", fontsize=9)
            ax.set_xlabel(f"single restored layer within {_short(model) or 'the model'}", fontsize=8)
        else:
            name = TITLES[kind]
            ax.set_title(f"Restoring {name}", fontsize=9)
            ax.set_xlabel(f"center of interval of {trace.window} restored {name} layers", fontsize=8)
        cb = fig.colorbar(h, ax=ax)
        cb.ax.tick_params(labelsize=7)
        cb.ax.set_title(f"p({trace.answer_token.strip() or repr(trace.answer_token)})", fontsize=8)
    how = {"attribution": "\nattribution-patching estimate", "auto": "\nrows marked » traced exactly, the others the attribution-patching estimate"}.get(trace.method, "")
    fig.suptitle(f"{trace.fact.prompt}  →  {trace.fact.answer.strip()}   (p={trace.p_clean:.2f}, p*={trace.p_corrupt:.2f}){how}", fontsize=9, y=1.06 if how else 0.98)
    return _save(fig, path, dpi)


def plot_aie(summary: dict, path: str | os.PathLike, *, title: str = "", dpi: int = 110) -> Path:
    """AIE per layer by token group (lines) with 95 % bands, one panel per kind."""
    plt = _pyplot()
    kinds = list(summary["aie"])
    L = int(summary["n_layers"])
    x = np.arange(L)
    width = 4.2 + 0.06 * max(0, L - 12)  # deeper models get wider panels
    fig, axes = plt.subplots(1, len(kinds), figsize=(width * len(kinds), 3.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        for group in TOKEN_GROUPS:
            stats = summary["aie"][kind][group]
            if not stats["n"]:
                continue
            mean = np.asarray(stats["mean"], dtype=float)
            ax.plot(x, mean, marker="o", markersize=3, color=GROUP_COLORS[group], label=f"{GROUP_LABELS[group]} (n={stats['n']})")
            ax.fill_between(x, np.asarray(stats["ci_low"], dtype=float), np.asarray(stats["ci_high"], dtype=float), color=GROUP_COLORS[group], alpha=0.15)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title({"hidden": "hidden states", "mlp": "MLP", "attn": "attention"}.get(kind, kind), fontsize=10)
        ax.set_xlabel("layer" if kind == "hidden" else "center of restored window", fontsize=9)
        layer_axis(ax, L)
    axes[0][0].set_ylabel("average indirect effect", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    rows = -(-len(labels) // 3)
    fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=min(len(labels), 3), bbox_to_anchor=(0.5, 0.07), frameon=False)
    fig.subplots_adjust(bottom=0.2 + 0.03 * rows)
    te = summary["te"]
    fig.suptitle(title or f"AIE over {summary['n_facts']} facts; average total effect {te['mean']:.3f} [{te['ci_low']:.3f}, {te['ci_high']:.3f}]", fontsize=10)
    return _save(fig, path, dpi)
