"""Batching that gives the same numbers as one row at a time.

Padding a batch changes a model's numbers slightly even when every mask is right: the attention
kernel reduces over the padded key length, so a row's softmax and weighted sum are added up in
another order than when the row runs alone (about 1e-6 in the logits of the tiny fixture model).
:func:`row_exact_attention` removes that difference: it swaps the model's SDPA attention for a
wrapper that runs SDPA on each row's own keys only (rows with the same span share one call), so
every row sees exactly the kernel call, shapes and mask (none) it would get alone. Linear layers
stay batched.

What remains is the matrix-multiply library: it picks other kernels for matrices with very few
rows, and where "few" ends depends on the CPU (measured with this project's CPU build of torch:
fewer than 12 rows on an AMD EPYC, fewer than 16 on an AVX-512 Intel Xeon, for the fixture's
MLP down-projection), so a row of few tokens, or a one-token decoding step, can differ in the
last bits from its batched twin. :func:`small_rows` measures the boundary on the machine, for
the model's own weight shapes. Callers handle it: NLL scores rows shorter than that alone,
generation reruns a row alone when a near-tie makes the last bits matter (see
:mod:`unlearn.generation`).

Also here: length-sorted batch planning and the automatic batch size (a memory budget divided
by the bytes one row needs).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

#: The least :func:`small_rows` returns (what it measured on the AMD EPYC this project began on).
SMALL_ROWS = 12
#: :func:`small_rows` tries matrices of up to this many rows.
PROBE_ROWS = 64

ROW_EXACT = "amnesia_row_exact"
_WRAPPABLE = ("sdpa",)


def small_rows(model) -> int:
    """Rows with fewer tokens than this may round differently alone than inside a batch, here.

    For each distinct weight shape of the model's linear layers, ``x[:m] @ W.T`` is compared
    bit for bit with the first ``m`` rows of a ``2 · PROBE_ROWS``-row product, for ``m`` up to
    :data:`PROBE_ROWS`; the answer is one more than the largest ``m`` that differs (at least
    :data:`SMALL_ROWS`). Measured once per shape set, dtype, device and thread count.
    """
    weights = {}
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and isinstance(w, torch.Tensor) and w.dim() == 2 and w.is_floating_point():
            weights.setdefault(tuple(w.shape), w)
    device = next(model.parameters()).device
    key = (tuple(sorted(weights)), str(next(model.parameters()).dtype), str(device), torch.get_num_threads())
    if key not in _SMALL_ROWS:
        _SMALL_ROWS[key] = _probe_small_rows(list(weights.values()))
    return _SMALL_ROWS[key]


_SMALL_ROWS: dict[tuple, int] = {}


@torch.no_grad()
def _probe_small_rows(weights: Sequence[torch.Tensor]) -> int:
    worst = 0
    generator = torch.Generator(device="cpu").manual_seed(0)
    for w in weights:
        x = torch.randn(2 * PROBE_ROWS, w.shape[1], generator=generator).to(w.device, w.dtype)
        batched = torch.nn.functional.linear(x, w)
        for m in range(PROBE_ROWS, worst, -1):  # the largest m that differs decides
            if not torch.equal(torch.nn.functional.linear(x[:m], w), batched[:m]):
                worst = m
                break
    return max(SMALL_ROWS, worst + 1)


# --------------------------------------------------------------------------- row-exact attention


@dataclass(frozen=True)
class _Spans:
    """What the mask function hands the attention function: each row's 2D padding mask."""

    padding: torch.Tensor  # bool [batch, kv_length]


def _padding_mask_function(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Callable | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
):
    """Mask interface for :data:`ROW_EXACT`: the padding mask itself, or a 4D SDPA mask when unusual.

    Plain causal masks become a :class:`_Spans` (or ``None`` without padding); anything else
    (sliding windows, packed sequences, custom patterns) gets SDPA's own 4D mask, which the
    attention function then passes through unchanged.
    """
    from transformers.masking_utils import causal_mask_function, prepare_padding_mask, sdpa_mask

    if mask_function is not causal_mask_function or kv_offset != 0 or kwargs.get("local_size") is not None:
        return sdpa_mask(
            batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset, kv_offset=kv_offset,
            mask_function=mask_function, attention_mask=attention_mask, **kwargs,
        )
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    if padding is None:
        return None
    padding = padding[:, :kv_length].bool()
    if bool(padding.all()):
        return None
    return _Spans(padding)


def _span(row: torch.Tensor) -> tuple[int, int] | None:
    """``(start, end)`` of the True entries of a 1D bool row when they are contiguous, else None."""
    idx = torch.nonzero(row, as_tuple=False).flatten()
    if idx.numel() == 0:
        return (0, 0)
    start, end = int(idx[0]), int(idx[-1]) + 1
    return (start, end) if end - start == idx.numel() else None


def _make_row_exact(base: Callable) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        if not isinstance(attention_mask, _Spans):
            return base(module, query, key, value, attention_mask, **kwargs)
        padding = attention_mask.padding
        batch, _, q_len, _ = query.shape
        kv_len = key.shape[2]
        q_first = kv_len - q_len  # key position of the first query
        out = query.new_zeros(batch, q_len, query.shape[1], value.shape[-1])
        groups: dict[tuple[int, int], list[int]] = {}
        for b in range(batch):
            span = _span(padding[b])
            if span is None:  # not a left/right padded row: keep SDPA's mask for it
                from transformers.masking_utils import causal_mask_function, sdpa_mask

                mask = sdpa_mask(batch_size=1, q_length=q_len, kv_length=kv_len, q_offset=q_first,
                                 mask_function=causal_mask_function, attention_mask=padding[b : b + 1],
                                 allow_is_causal_skip=False, device=query.device)
                res, _ = base(module, query[b : b + 1], key[b : b + 1], value[b : b + 1], mask, **kwargs)
                out[b : b + 1] = res
                continue
            groups.setdefault(span, []).append(b)
        for (start, end), rows in groups.items():
            qs, qe = max(start - q_first, 0), end - q_first
            if qe <= qs:
                continue
            sel = torch.tensor(rows, device=query.device)
            q = query.index_select(0, sel)[:, :, qs:qe]
            k = key.index_select(0, sel)[:, :, start:end]
            v = value.index_select(0, sel)[:, :, start:end]
            mask = None
            if qe - qs > 1 and (qe - qs) != (end - start):  # queries that do not start at the first key
                offset = (end - start) - (qe - qs)
                qpos = torch.arange(qe - qs, device=query.device)[:, None] + offset
                mask = (torch.arange(end - start, device=query.device)[None, :] <= qpos)[None, None]
            res, _ = base(module, q, k, v, mask, **kwargs)
            out[sel, qs:qe] = res
        return out, None

    attention.__name__ = f"row_exact_{getattr(base, '__name__', 'attention')}"
    return attention


def _register(name: str, base_name: str) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, _make_row_exact(AttentionInterface._global_mapping[base_name]))
    AttentionMaskInterface.register(name, _padding_mask_function)


def supports_row_exact(model) -> bool:
    """True when the model's attention is SDPA (the transformers default) and can be wrapped."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in (*_WRAPPABLE, ROW_EXACT) and hasattr(model, "set_attn_implementation")


@contextlib.contextmanager
def row_exact_attention(model, enabled: bool = True) -> Iterator[bool]:
    """Run ``model`` with per-row SDPA attention inside the block; yields whether it is active.

    Models whose attention is not SDPA (eager, flash-attention, …) are left as they are (flash
    attention already skips padding). The previous implementation is restored on exit.
    """
    if not enabled or not supports_row_exact(model) or model.config._attn_implementation == ROW_EXACT:
        yield enabled and supports_row_exact(model)
        return
    previous = model.config._attn_implementation
    _register(ROW_EXACT, previous)
    model.set_attn_implementation(ROW_EXACT)
    try:
        yield model.config._attn_implementation == ROW_EXACT  # False when the model refused the switch
    finally:
        if model.config._attn_implementation != previous:
            model.set_attn_implementation(previous)


# --------------------------------------------------------------------------- batch planning


def plan_batches(lengths: Sequence[int], rows_for_width: Callable[[int], int], min_fill: float = 0.5) -> list[list[int]]:
    """Indices grouped into batches, longest rows first.

    A batch whose longest row has W tokens holds at most ``rows_for_width(W)`` rows, and a row
    shorter than ``min_fill × W`` starts a new batch (so padding stays under half the batch).
    Starting with the longest rows makes a batch too big for memory fail at once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            width = lengths[batch[0]]
            if len(batch) < max(1, int(rows_for_width(width))) and lengths[i] >= min_fill * width:
                batch.append(i)
                continue
        batches.append([i])
    return batches


def memory_budget(device: torch.device | str, fraction: float = 0.5, cpu_cap: int = 4 << 30) -> int:
    """Bytes a batch may use: ``fraction`` of free GPU memory, or of available RAM capped at ``cpu_cap``."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * fraction)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 8 << 30
    return int(min(available * fraction, cpu_cap))


def model_dims(model) -> dict[str, int]:
    """Layers, hidden size, KV width, vocabulary and bytes per element of a causal LM."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 1024)
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0) or 16)
    kv_heads = int(getattr(cfg, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(cfg, "head_dim", 0) or hidden // heads)
    param = next(model.parameters())
    return {
        "layers": int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0) or 24),
        "hidden": hidden,
        "kv_width": kv_heads * head_dim,
        "intermediate": int(getattr(cfg, "intermediate_size", 0) or 4 * hidden),
        "vocab": int(getattr(cfg, "vocab_size", 0) or 50304),
        "elem": param.element_size(),
    }


def generation_row_bytes(dims: dict[str, int], tokens: int) -> int:
    """Bytes one generating row needs: its KV cache over ``tokens`` plus one layer's activations and the fp32 logits."""
    kv = 2 * dims["layers"] * dims["kv_width"] * dims["elem"] * tokens
    activations = tokens * (4 * dims["hidden"] + 2 * dims["intermediate"]) * dims["elem"]
    logits = 3 * dims["vocab"] * 4
    return kv + activations + logits


def forward_row_bytes(dims: dict[str, int], tokens: int) -> int:
    """Bytes one row of a full forward pass with all logits needs (logits, their fp32 copy, log-softmax)."""
    activations = tokens * (4 * dims["hidden"] + 2 * dims["intermediate"]) * dims["elem"]
    logits = tokens * dims["vocab"] * (dims["elem"] + 2 * 4)
    return activations + logits


def auto_rows(budget: int, row_bytes: int, max_rows: int) -> int:
    """How many rows of ``row_bytes`` fit in ``budget`` (at least 1, at most ``max_rows``)."""
    return max(1, min(max_rows, budget // max(1, row_bytes)))


def default_max_rows(device: torch.device | str) -> int:
    """Upper bound for automatic batches: 64 rows on CPU (no gain beyond), 256 on GPU."""
    return 256 if torch.device(device).type == "cuda" else 64
