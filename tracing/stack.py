"""Entering the decoder stack mid-way: run only the layers a restoration can change.

A restoration whose first restored site is at layer ``l`` cannot change what layers ``< l``
compute: up to there the run is the corrupted run, whose block inputs the tracer keeps. So its
rows can *enter* the stack at layer ``l`` from the corrupted run's residual stream there, and only
blocks ``l..L-1`` need running (for ``hidden`` at layer ``l``, the clean state is put into the
residual entering block ``l + 1``). TransformerBridge's ``start_at_layer`` does not save this work
(it still runs the earlier blocks), so :func:`run_stack` drives the bridge's own blocks one by one:

* rows are ordered by the layer they enter at, so the rows active at block ``i`` are a prefix
  ``0..n_i-1`` of the batch and each block runs on exactly the rows that need it (a batch that
  grows with depth: all restorations of a token share the block calls, none runs a layer it does
  not need);
* every block gets the arguments the model itself passes its layers (position embeddings,
  causal mask, cache positions), captured once per prompt suffix by :func:`layer_arguments` from
  a one-row forward stopped at the first block (masks and rotary tables of one row broadcast
  over the batch);
* the KV cache of the tokens before the run's first one holds, at layer ``i``, the corrupted
  run's keys and values of the ``n_i`` active rows (a cache's layers need not share a batch size);
* after the last block, the bridge's final norm and unembedding give the last position's logits.

:func:`stack_entry_works` checks numerically, per model, that entering mid-stack reproduces the
full forward before the tracer relies on it (else the tracer runs full forwards, as before).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from .bridge import cache_keyword, check_rows, new_cache, prefix_cache


class _Stop(Exception):
    """Raised by the capture hook to end a forward at the first block."""


def _is_cache(value) -> bool:
    return value is not None and hasattr(value, "get_seq_length") and hasattr(value, "update")


@dataclass
class LayerArguments:
    """What the model passes each decoder layer for one prompt suffix, the hidden states aside."""

    args: tuple
    kwargs: dict

    def call(self, block, hidden: torch.Tensor, cache):
        """Run ``block`` on ``hidden`` with these arguments and ``cache``; returns its hidden output."""
        kwargs = {k: (cache if _is_cache(v) else v) for k, v in self.kwargs.items()}
        if not self.args:  # the model passed its hidden states by keyword
            out = block(**{**kwargs, "hidden_states": hidden})
        else:
            out = block(hidden, *(cache if _is_cache(a) else a for a in self.args[1:]), **kwargs)
        return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def layer_arguments(bridge, model, ids: torch.Tensor, cache=None, forward_kwargs: dict | None = None) -> LayerArguments:
    """The arguments block 0 receives when the model runs the one-row prompt suffix ``ids``.

    ``cache`` (one row, the tokens before ``ids``) sets the positions; the forward stops at the
    first block, so nothing but the embeddings is computed.
    """
    captured: dict = {}

    def grab(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, dict(kwargs)
        raise _Stop

    kwargs = dict(forward_kwargs or {})
    if cache is not None:
        kwargs.update({cache_keyword(model): cache, "use_cache": True})
    handle = bridge.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        bridge(ids.reshape(1, -1), return_type="logits", **kwargs)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "args" not in captured:
        raise RuntimeError("the model's forward never reached its first block")
    return LayerArguments(captured["args"], captured["kwargs"])


def _layer_kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers >= 4.56
        return layers[layer].keys, layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


@dataclass
class StackRows:
    """Rows entering the stack: ``enter[r]`` is row ``r``'s first block (``L``: none, straight to
    the final norm), non-decreasing; ``states(i, rows)`` gives the residual stream entering block
    ``i`` for the rows that enter there (``[len(rows), q, d]``); ``cache_rows[r]`` is the row of
    the prefix cache row ``r`` continues."""

    enter: Sequence[int]
    states: Callable[[int, list[int]], torch.Tensor]
    cache_rows: torch.Tensor


@torch.no_grad()
def run_stack(bridge, model, rows: StackRows, arguments: LayerArguments, prefix=None, start: int = 0, *, hooks: Sequence = ()) -> torch.Tensor:
    """Last-position logits ``[n_rows, d_vocab]`` of rows that enter the stack at their own layers.

    The rows hold the prompt's tokens ``start..T-1``; ``prefix`` is a KV cache holding (at least)
    tokens ``0..start-1`` of the run the rows continue (``rows.cache_rows`` picks its rows), used
    when ``start > 0``; ``hooks`` are ``(hook name, fn)`` pairs active during the blocks (row
    indices as in ``rows``).
    """
    n_layers = len(bridge.blocks)
    enter = list(rows.enter)
    if any(b < a for a, b in zip(enter, enter[1:])):
        raise ValueError("rows must be ordered by the layer they enter at")
    hidden = None
    cache = new_cache(model)
    with bridge.hooks(fwd_hooks=list(hooks)):
        for layer in range(enter[0] if enter else n_layers, n_layers):
            hidden = _join(hidden, rows, enter, layer)
            n = hidden.shape[0]
            if start > 0:
                keys, values = _layer_kv(prefix, layer)
                pick = rows.cache_rows[:n].to(keys.device)
                cache.update(keys[pick, :, :start], values[pick, :, :start], layer)
            hidden = arguments.call(bridge.blocks[layer], hidden, cache)
    hidden = _join(hidden, rows, enter, n_layers)
    last = hidden[:, -1:]
    return bridge.unembed(bridge.ln_final(last))[:, -1]


def _join(hidden: torch.Tensor | None, rows: StackRows, enter: list[int], layer: int) -> torch.Tensor:
    """``hidden`` with the rows entering at ``layer`` appended."""
    new = [r for r, e in enumerate(enter) if e == layer]
    if not new:
        return hidden
    states = rows.states(layer, new)
    return states if hidden is None else torch.cat([hidden, states.to(hidden.dtype)])


@contextlib.contextmanager
def recording_block_inputs(bridge) -> Iterator[list[torch.Tensor]]:
    """Inside the block, forwards append the residual stream entering every block and leaving the
    last (``L + 1`` tensors ``[B, T, d]``) to the yielded list."""
    store: list[torch.Tensor] = []

    def grab_input(module, args, kwargs):
        store.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    def grab_output(module, args, out):
        store.append((out[0] if isinstance(out, tuple) else out).detach().clone())

    handles = [b.register_forward_pre_hook(grab_input, with_kwargs=True) for b in bridge.blocks]
    handles.append(bridge.blocks[-1].register_forward_hook(grab_output))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def block_inputs(bridge, ids: torch.Tensor, **forward_kwargs) -> torch.Tensor:
    """The residual stream entering every block and leaving the last, ``[L + 1, B, T, d]``."""
    with recording_block_inputs(bridge) as store:
        bridge(ids, return_type="logits", **forward_kwargs)
    return torch.stack(store)


@torch.no_grad()
def stack_entry_works(bridge, model, input_ids: torch.Tensor, *, atol: float | None = None) -> bool:
    """Whether entering the stack mid-way reproduces the full forward for this model.

    Two different rows of ``input_ids``; every row enters at a different layer (0 to ``L``) from
    the full run's own block inputs, on the first half's KV cache; the last position's
    log-probabilities must match the full forward's within ``atol`` (1e-4 in fp32, 5e-2 in
    16-bit floats; a wrong cache row or layer argument is off by far more, even on a random
    model whose probabilities are all ~1/vocabulary). Any exception means no.
    """
    ids, atol = check_rows(model, input_ids, atol, 1e-4, 5e-2)
    if ids is None:
        return False
    try:
        cache = new_cache(model)
        if cache is None:
            return False
        key = cache_keyword(model)
        states = block_inputs(bridge, ids, use_cache=True, **{key: cache})  # [L+1, 2, T, d]
        full = torch.log_softmax(bridge(ids, return_type="logits")[:, -1].float(), dim=-1)
        keep = ids.shape[1] // 2
        n_layers = len(bridge.blocks)
        enter = sorted([i for i in range(n_layers + 1)] * 2)
        which = torch.tensor([r % 2 for r in range(len(enter))], device=ids.device)
        arguments = layer_arguments(bridge, model, ids[0, keep:], prefix_cache(cache, keep, which[:1]))
        rows = StackRows(enter, lambda layer, new: states[layer, which[new], keep:], which)
        got = torch.log_softmax(run_stack(bridge, model, rows, arguments, cache, keep).float(), dim=-1)
        return bool((full[which] - got).abs().max() <= atol)
    except Exception:  # noqa: BLE001 - any failure means: do not enter mid-stack
        return False


__all__ = ["LayerArguments", "StackRows", "block_inputs", "layer_arguments", "recording_block_inputs", "run_stack", "stack_entry_works"]
