"""Automatic layer selection from the AIE curve, written as ``layers.json``.

* ``window`` (default): the contiguous window of ``k`` layers whose summed AIE of ``kind`` at
  token ``group`` (default: MLP at the last subject token, where ROME locates factual recall) is
  largest; ties go to the lowest window; ``k`` larger than the model is clipped to all layers.
* ``threshold``: every layer whose AIE is at least ``fraction`` × the largest AIE (which must
  be positive).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .aggregation import TOKEN_GROUPS, layer_profile
from .bridge import KINDS
from .errors import AmnesiaError
from .layers import LayerSelection

MODES = ("window", "threshold")


@dataclass(frozen=True)
class SelectionConfig:
    """How to pick layers from the traced AIE."""

    mode: str = "window"
    k: int = 6
    fraction: float = 0.5
    kind: str = "mlp"
    group: str = "last_subject"

    def check(self) -> "SelectionConfig":
        if self.mode not in MODES:
            raise AmnesiaError(f"selection mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.k < 1:
            raise AmnesiaError(f"selection k {self.k}: expected a positive number of layers")
        if not 0 < self.fraction <= 1:
            raise AmnesiaError(f"selection fraction {self.fraction}: expected a number in (0, 1]")
        if self.kind not in KINDS:
            raise AmnesiaError(f"selection kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.group not in TOKEN_GROUPS:
            raise AmnesiaError(f"selection group {self.group!r}: expected one of {', '.join(TOKEN_GROUPS)}")
        return self


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
    layers = best_window(scores, config.k) if config.mode == "window" else above_fraction(scores, config.fraction)
    params = asdict(config)
    if config.mode == "window":
        params["k_used"] = len(layers)  # k clipped to the model's depth
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
