"""Attribution patching: a first-order estimate of every indirect effect, from one backward.

For a site ``(kind, layer)`` and token ``t``, restoring the clean activation ``a`` into the
corrupted run with activation ``a*`` changes the metric ``M = mean_j P_j(answer)`` by about

    IE[t, l] ≈ Σ_j (a[t] − a*_j[t]) · ∂M/∂a*_j[t]

(a Taylor step from the corrupted run; Nanda's "attribution patching", Syed et al. 2023). One
corrupted forward of the ``samples`` noise rows with a backward pass and the clean activations
give every ``(kind, t, l)`` at once. For ``mlp`` / ``attn`` the estimate of a window of layers is
the sum of its layers' estimates (the first-order effects add). It is a screen: cheap, and it
ranks layers similarly to exact tracing on the models we tried (see docs/tracing.md), but it is not
exact (saturated softmax probabilities are where it errs most).

:func:`auto_trace_fact` (``--method auto``) uses it as a screen: the estimate of every cell, and
exact tracing at the tokens layer selection reads (``TraceConfig.confirm``, the last subject
token by default), whose exact values replace the estimate there; the estimate at those tokens
is kept beside them (``FactTrace.screen``) to report how well the two agree.
"""

from __future__ import annotations

import numpy as np
import torch

from .bridge import EMBED_HOOK, hook_name
from .facts import TokenizedFact
from typing import Callable, Sequence

from .config import TraceConfig
from .tracer import FactTrace, clean_run, restored_layers, trace_fact


def attribute_fact(bridge, tf: TokenizedFact, noise: torch.Tensor, config: TraceConfig) -> FactTrace:
    """Attribution-patching estimate of ``tf``'s trace (same shape as exact tracing's)."""
    device = next(bridge.parameters()).device
    n_layers = int(bridge.cfg.n_layers)
    ids = torch.tensor(tf.input_ids, device=device)
    s, e = tf.subject_range
    samples = noise.shape[0]
    p_clean, clean = clean_run(bridge, ids, config.kinds, tf.answer_id, n_layers)

    acts: dict[str, torch.Tensor] = {}

    def add_noise(act, hook):
        act = act.detach().clone()
        act[:, s:e] += noise.to(act.device, act.dtype)
        return act.requires_grad_(True)  # the graph starts here, whatever the parameters' flags

    def keep(act, hook):
        acts[hook.name] = act
        return act

    names = {(k, l): hook_name(k, l) for k in config.kinds for l in range(n_layers)}
    with torch.enable_grad(), bridge.hooks(fwd_hooks=[(EMBED_HOOK, add_noise)] + [(n, keep) for n in names.values()]):
        logits = bridge(ids.unsqueeze(0).expand(samples, -1), return_type="logits")
        metric = torch.softmax(logits[:, -1].float(), dim=-1)[:, tf.answer_id].mean()
        keys = list(names)
        tensors = [acts[bridge.hook_dict[names[key]].name] for key in keys]
        grads = torch.autograd.grad(metric, tensors, allow_unused=True)
    p_corrupt = metric.item()

    ie = {}
    for kind in config.kinds:
        per_layer = np.zeros((len(tf.input_ids), n_layers), dtype=np.float64)
        for i, (k, layer) in enumerate(keys):
            if k != kind or grads[i] is None:
                continue
            delta = clean[kind][layer].unsqueeze(0) - tensors[i].detach()  # [samples, T, d]
            per_layer[:, layer] = (delta.float() * grads[i].float()).sum(dim=(0, 2)).cpu().numpy()
        windows = [list(restored_layers(kind, l, n_layers, config.window)) for l in range(n_layers)]
        ie[kind] = np.stack([per_layer[:, w].sum(axis=1) for w in windows], axis=1)
    return FactTrace(tf.fact, list(tf.tokens), list(tf.input_ids), tuple(tf.subject_range), tf.answer_id, tf.answer_token, p_clean, p_corrupt, ie, "attribution", config.window)


def auto_trace_fact(
    bridge,
    model,
    tf: TokenizedFact,
    noise: torch.Tensor,
    config: TraceConfig,
    positions: Sequence[int],
    *,
    suffix: bool = False,
    skip_layers: bool = False,
    batch_rows: int | None = None,
    advance: Callable[[int], object] | None = None,
) -> FactTrace:
    """The attribution screen of every cell, exact tracing at token ``positions`` (method ``auto``).

    The returned IE tables hold the exact values at ``positions`` and the estimate elsewhere;
    ``exact_positions`` and ``screen`` (the estimate at those positions) say which is which.
    """
    screen = attribute_fact(bridge, tf, noise, config)
    exact = trace_fact(bridge, model, tf, noise, config, suffix=suffix, skip_layers=skip_layers, batch_rows=batch_rows, positions=positions, advance=advance)
    rows = sorted(set(positions))
    ie = {}
    for kind in config.kinds:
        ie[kind] = screen.ie[kind].copy()
        ie[kind][rows] = exact.ie[kind][rows]
    return FactTrace(
        tf.fact, list(tf.tokens), list(tf.input_ids), tuple(tf.subject_range), tf.answer_id, tf.answer_token, exact.p_clean, exact.p_corrupt, ie, "auto", config.window,
        exact_positions=rows, screen={kind: screen.ie[kind][rows] for kind in config.kinds},
    )
