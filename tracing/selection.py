"""Automatic layer selection from the AIE curve, written as ``layers.json``.

* ``window`` (default): the contiguous window of ``k`` layers whose summed AIE of ``kind`` at
  token ``group`` (default: MLP at the last subject token, where ROME locates factual recall) is
  largest; ties go to the lowest window; ``k`` larger than the model is clipped to all layers.
  ``k=None`` (default) scales with depth: ``depth_fraction`` of the layers, rounded, at least 1
  — 3/8, the paper's 6 of OLMo-1B's 16 layers (2 of a 6-layer model, 11 of a 30-layer one).
  With ``evidence`` (default) only the window's layers whose AIE is distinguishable from zero
  (95 % interval above 0) are kept; when none is, the whole window is kept and
  ``params["warning"]`` says so (a one-line warning for the user).
* ``threshold``: every layer whose AIE is at least ``fraction`` × the largest AIE (which must
  be positive).
"""

from __future__ import annotations

from dataclasses import asdict

from .aggregation import layer_profile
from .config import MODES, SelectionConfig  # noqa: F401 - part of this module's API
from .errors import AmnesiaError
from .layers import LayerSelection


def best_window(scores: list[float], k: int) -> list[int]:
    """The ``k`` contiguous layers with the largest summed score (first on ties)."""
    k = min(k, len(scores))
    sums = [sum(scores[i : i + k]) for i in range(len(scores) - k + 1)]
    start = max(range(len(sums)), key=lambda i: (sums[i], -i))
    return list(range(start, start + k))


def above_fraction(scores: list[float], fraction: float) -> list[int]:
    """Layers scoring at least ``fraction`` × the maximum score (which must be positive)."""
    top = max(scores)
    if not top > 0:
        raise AmnesiaError(f"threshold selection needs a positive AIE; the largest is {top:.3g} (use the window mode)")
    return [i for i, v in enumerate(scores) if v >= fraction * top]


def select_layers(summary: dict, config: SelectionConfig = SelectionConfig(), *, model: str = "", method_note: str | None = None) -> LayerSelection:
    """Choose layers from an :func:`tracing.aggregate.aggregate` summary."""
    config.check()
    if config.kind not in summary.get("aie", {}):
        raise AmnesiaError(f"selection kind {config.kind!r} was not traced (traced: {', '.join(summary.get('aie', {})) or 'none'}); add it to --kinds")
    try:
        scores = layer_profile(summary, config.kind, config.group)
    except KeyError as exc:
        raise AmnesiaError(f"cannot select layers: {exc.args[0]}") from None
    params = asdict(config)
    if config.mode == "window":
        layers = best_window(scores, config.k_for(len(scores)))
        params["k_used"] = len(layers)  # k clipped to the model's depth, or the depth fraction
    else:
        layers = above_fraction(scores, config.fraction)
    if config.evidence:
        ci_low = summary["aie"][config.kind][config.group].get("ci_low")
        if ci_low is not None:
            clear = [l for l in layers if ci_low[l] is not None and ci_low[l] > 0]
            params["distinguishable"] = clear
            if clear:
                layers = clear
            else:
                params["warning"] = (f"no selected layer's {config.kind} AIE at the {config.group.replace('_', ' ')} token is distinguishable "
                                     f"from zero (every 95 % interval includes 0); kept the window {layers} anyway — trace more facts "
                                     "(--max-facts) or pin the layers")
    if method_note:
        params["tracing"] = method_note
    return LayerSelection(
        kind=config.kind,
        layers=layers,
        method=config.mode,
        scores=scores,
        n_facts=int(summary.get("n_facts", 0)),
        model=model,
        n_layers=len(scores),
        params=params,
    )
