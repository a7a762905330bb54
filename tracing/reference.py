"""The plain reference: ROME's causal-tracing loop, one restoration per forward pass.

This is ROME's ``trace_with_patch`` / ``trace_important_states`` / ``trace_important_window``
written over TransformerBridge hooks: every forward runs ``1 + samples`` rows of the full prompt,
row 0 clean and rows 1.. corrupted with the given noise, and the restored sites copy row 0's
activation into the corrupted rows at one token. Every position and layer is run, nothing is
shared between forwards. It is slow on purpose: the tests and ``perf/trace_speed.py``
hold the batched tracer (:func:`tracing.tracer.trace_fact`) to it.
"""

from __future__ import annotations

import numpy as np
import torch

from .bridge import EMBED_HOOK, hook_name
from .facts import TokenizedFact
from .config import TraceConfig
from .tracer import FactTrace, restored_layers


@torch.no_grad()
def run_with_patch(bridge, input_ids: torch.Tensor, noise: torch.Tensor, subject_range: tuple[int, int], answer_id: int, position: int | None, sites: list[tuple[str, int]]) -> float:
    """ROME's ``trace_with_patch``: mean ``P(answer)`` over the corrupted rows of one forward.

    ``noise`` ``[samples, e - s, d]`` is added to rows ``1..samples`` at the subject tokens; each
    ``(kind, layer)`` in ``sites`` copies row 0's (clean) activation at ``position`` into them.
    """
    samples = noise.shape[0]
    s, e = subject_range
    ids = input_ids.unsqueeze(0).expand(1 + samples, -1)

    def add_noise(act, hook):
        act = act.clone()
        act[1:, s:e] += noise.to(act.device, act.dtype)
        return act

    def restore(act, hook):
        act = act.clone()
        act[1:, position] = act[0, position]
        return act

    hooks = [(EMBED_HOOK, add_noise)] + [(hook_name(kind, layer), restore) for kind, layer in sites]
    with bridge.hooks(fwd_hooks=hooks):
        logits = bridge(ids, return_type="logits")
    probs = torch.softmax(logits[1:, -1].float(), dim=-1)[:, answer_id]
    return probs.mean().item()


@torch.no_grad()
def trace_fact_reference(bridge, tf: TokenizedFact, noise: torch.Tensor, config: TraceConfig) -> FactTrace:
    """Trace one fact the slow way; same inputs and output as :func:`tracing.tracer.trace_fact`."""
    device = next(bridge.parameters()).device
    n_layers = int(bridge.cfg.n_layers)
    ids = torch.tensor(tf.input_ids, device=device)
    T = len(tf.input_ids)
    logits = bridge(ids.unsqueeze(0), return_type="logits")
    p_clean = torch.softmax(logits[0, -1].float(), dim=-1)[tf.answer_id].item()
    p_corrupt = run_with_patch(bridge, ids, noise, tf.subject_range, tf.answer_id, None, [])
    ie = {}
    for kind in config.kinds:
        table = np.zeros((T, n_layers), dtype=np.float64)
        for t in range(T):
            for layer in range(n_layers):
                sites = [(kind, l2) for l2 in restored_layers(kind, layer, n_layers, config.window)]
                table[t, layer] = run_with_patch(bridge, ids, noise, tf.subject_range, tf.answer_id, t, sites)
        ie[kind] = table - p_corrupt
    return FactTrace(tf.fact, list(tf.tokens), list(tf.input_ids), tuple(tf.subject_range), tf.answer_id, tf.answer_token, p_clean, p_corrupt, ie, "reference", config.window)
