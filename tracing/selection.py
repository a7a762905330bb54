"""Automatic layer selection from the AIE curve, written as ``layers.json``.

* ``window`` (default): the contiguous window of ``k`` layers whose summed AIE of ``kind`` at
  token ``group`` is largest; ties go to the lowest window; ``k`` larger than the model is clipped to all layers.
  ``k=None`` (default) scales with depth: ``depth_fraction`` of the layers, rounded, at least 1
  — 3/8, the paper's 6 of OLMo-1B's 16 layers (2 of a 6-layer model, 11 of a 30-layer one).
  With ``evidence`` (default) only the window's layers whose AIE is distinguishable from zero
  (95 % interval above 0) are kept; when none is, the whole window is kept and
  ``params["warning"]`` says so (a one-line warning for the user).
* ``threshold``: every layer whose AIE is at least ``fraction`` × the largest AIE (which must
  be positive).

``group``: the token group whose AIE is read. ``auto`` (default) reads where the evidence is:
each subject group (first and last subject token: ROME locates the recall of a fact at the
subject) is selected on its own, and the one whose selected layers have the largest summed AIE
among those with a layer distinguishable from zero wins (the last subject token when none has
one). On a model that reads the subject at its first token — the tiny demo targets, SmolLM2 —
that is the first subject token; ``params["group"]`` is the group used and
``params["groups"]`` every candidate's window, evidence and AIE.
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


def _select_group(summary: dict, config: SelectionConfig, group: str) -> tuple[list[int], list[float], dict]:
    """Layers, the AIE profile and the selection's record for one token ``group``."""
    scores = layer_profile(summary, config.kind, group)
    record: dict = {}
    if config.mode == "window":
        layers = best_window(scores, config.k_for(len(scores)))
        record["k_used"] = len(layers)  # k clipped to the model's depth, or the depth fraction
    else:
        layers = above_fraction(scores, config.fraction) if max(scores) > 0 else []
    if config.evidence:
        ci_low = summary["aie"][config.kind][group].get("ci_low")
        if ci_low is not None:
            record["distinguishable"] = [l for l in layers if ci_low[l] is not None and ci_low[l] > 0]
    record["aie_sum"] = float(sum(scores[l] for l in layers))
    return layers, scores, record


def select_layers(summary: dict, config: SelectionConfig = SelectionConfig(), *, model: str = "", method_note: str | None = None) -> LayerSelection:
    """Choose layers from an :func:`tracing.aggregate.aggregate` summary."""
    config.check()
    if config.kind not in summary.get("aie", {}):
        raise AmnesiaError(f"selection kind {config.kind!r} was not traced (traced: {', '.join(summary.get('aie', {})) or 'none'}); add it to --kinds")
    candidates = {}
    for group in config.groups:
        try:
            candidates[group] = _select_group(summary, config, group)
        except KeyError as exc:
            if config.group != "auto":
                raise AmnesiaError(f"cannot select layers: {exc.args[0]}") from None
        except AmnesiaError:
            if config.group != "auto":
                raise
    if not candidates:
        raise AmnesiaError(f"cannot select layers: no fact has tokens in the groups {', '.join(config.groups)}")
    with_evidence = [g for g, (layers, _, rec) in candidates.items() if layers and rec.get("distinguishable", layers)]
    if with_evidence:
        group = max(with_evidence, key=lambda g: (candidates[g][2]["aie_sum"], g == "last_subject"))
    else:
        group = "last_subject" if "last_subject" in candidates else next(iter(candidates))
    layers, scores, record = candidates[group]
    if not layers:  # threshold mode with no positive AIE in any group: its error names the largest AIE
        above_fraction(scores, config.fraction)  # raises
    params = asdict(config)
    params["group"] = group
    if config.group == "auto":
        params["group_requested"] = "auto"
        params["groups"] = {g: {"layers": c[0], **c[2]} for g, c in candidates.items()}
    params.update({k: v for k, v in record.items() if k != "aie_sum"})
    clear = record.get("distinguishable")
    if clear:
        layers = clear
    elif clear is not None:
        where = " or ".join(g.replace("_", " ") for g in candidates) + (" token" if len(candidates) == 1 else " tokens")
        params["warning"] = (f"no selected layer's {config.kind} AIE at the {where} is distinguishable "
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
