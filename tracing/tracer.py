"""ROME's causal tracing, batched, through TransformerBridge hooks.

For one fact (prompt, subject tokens ``[s, e)``, answer token ``a``):

1. **clean run** → ``p = P(a)`` and the clean activations of every traced kind at every layer;
2. **corrupted runs** (``samples`` rows): Gaussian noise on the subject tokens' embeddings →
   ``p* = mean P(a)``; total effect ``TE = p - p*``;
3. **restorations**: for each kind, token position ``t`` and layer ``l``, the corrupted runs with
   the clean activation put back at ``(t, l)`` (``hidden``: the block's output residual stream,
   one layer; ``mlp`` / ``attn``: the module outputs of a ``window`` of layers around ``l``, as
   ROME does) → indirect effect ``IE[t, l] = mean P(a) - p*``.

What makes it fast, all exact:

* many restorations × noise samples share one forward pass (:func:`patched_probs`, one generic
  function in the style of TransformerLens ``patching.py``), up to ``batch_size`` rows;
* the clean run and the corrupted runs share one forward pass, once per fact;
* **suffix trick**: a restoration at position ``t`` cannot change positions before ``t``
  (causal attention), which are the corrupted run's; so only tokens ``t..T-1`` are run, on top of
  the corrupted run's KV cache for ``0..t-1``. Used when :func:`tracing.bridge.suffix_cache_works`
  confirms it for the model, else full sequences are run;
* **layer skipping**: nor can it change the layers below its first restored site, which are the
  corrupted run's too; so its rows enter the stack there, from the corrupted run's residual
  stream (:func:`stacked_probs` over :mod:`tracing.stack`; ``hidden`` at ``l`` enters at block
  ``l + 1`` with the clean state written in). Used when :func:`tracing.stack.stack_entry_works`
  confirms it for the model, else every restoration runs every layer;
* positions before the first subject token see no noise, so restoring them restores what is
  already there: their IE is exactly 0 and they are not run.

:func:`fact_work` counts what all this runs, in token·layer evaluations (the progress bar's unit).

:func:`tracing.reference.trace_fact_reference` is the plain one-restoration-per-forward version
(ROME's own loop); the tests hold the two to ``max |ΔIE| <= 1e-5`` in fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .bridge import EMBED_HOOK, accepts_logits_to_keep, cache_keyword, hook_name, new_cache, prefix_cache
from .config import TraceConfig
from .facts import Fact, Skipped, TokenizedFact
from .stack import LayerArguments, StackRows, layer_arguments, recording_block_inputs, run_stack

TRACE_SCHEMA = 1
DEFAULT_MEMORY_MB = 1024


@dataclass
class FactTrace:
    """One fact's trace: clean / corrupted probabilities and ``ie[kind]`` of shape ``[T, L]``."""

    fact: Fact
    tokens: list[str]
    input_ids: list[int]
    subject_range: tuple[int, int]
    answer_id: int
    answer_token: str
    p_clean: float
    p_corrupt: float
    ie: dict[str, np.ndarray]
    method: str = "exact"
    window: int = 10
    exact_positions: list[int] | None = None  # method auto: the tokens traced exactly (None: all of them)
    screen: dict[str, np.ndarray] | None = None  # method auto: the attribution estimate at exact_positions, {kind: [n, L]}

    @property
    def te(self) -> float:
        """Total effect ``p - p*``."""
        return self.p_clean - self.p_corrupt

    @property
    def n_layers(self) -> int:
        return next(iter(self.ie.values())).shape[1]

    def to_dict(self) -> dict:
        return {
            "id": self.fact.id,
            "prompt": self.fact.prompt,
            "subject": self.fact.subject,
            "answer": self.fact.answer,
            "relation": self.fact.relation,
            "tokens": list(self.tokens),
            "input_ids": list(self.input_ids),
            "subject_range": list(self.subject_range),
            "answer_id": self.answer_id,
            "answer_token": self.answer_token,
            "p_clean": self.p_clean,
            "p_corrupt": self.p_corrupt,
            "te": self.te,
            "method": self.method,
            "window": self.window,
            "ie": {k: v.tolist() for k, v in self.ie.items()},
            **({"exact_positions": list(self.exact_positions)} if self.exact_positions is not None else {}),
            **({"screen": {k: v.tolist() for k, v in self.screen.items()}} if self.screen is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FactTrace":
        fact = Fact(d["prompt"], d["subject"], d["answer"], d.get("id", ""), d.get("relation", ""))
        return cls(
            fact, list(d["tokens"]), list(d.get("input_ids", [])), tuple(d["subject_range"]), int(d.get("answer_id", -1)),
            d.get("answer_token", ""), float(d["p_clean"]), float(d["p_corrupt"]),
            {k: np.asarray(v, dtype=np.float64) for k, v in d["ie"].items()}, d.get("method", "exact"), int(d.get("window", 10)),
            list(d["exact_positions"]) if "exact_positions" in d else None,
            {k: np.asarray(v, dtype=np.float64).reshape(-1, len(d["ie"][k][0])) for k, v in d["screen"].items()} if "screen" in d else None,
        )


@dataclass
class TraceResult:
    """Everything one tracing run produced (before aggregation)."""

    traces: list[FactTrace]
    skipped: list[Skipped] = field(default_factory=list)
    config: TraceConfig = field(default_factory=TraceConfig)
    model: str = ""
    n_layers: int = 0
    noise_std: float = float("nan")
    embedding_std: float | None = None
    suffix: bool = False
    skip_layers: bool = False
    seconds: float = 0.0
    n_passed: int | None = None  # facts that passed the filter (>= traced when capped by max_facts)

    def to_dict(self, summary: dict | None = None) -> dict:
        """The ``trace.json`` document (schema 1): run metadata, per-fact traces, summary, skipped facts."""
        return {
            "schema": TRACE_SCHEMA,
            "kind": "trace",
            "model": self.model,
            "n_layers": self.n_layers,
            "method": self.config.method,
            "config": self.config.to_dict(),
            "noise_std": self.noise_std,
            "embedding_std": self.embedding_std,
            "suffix": self.suffix,
            "skip_layers": self.skip_layers,
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "summary": summary,
            "facts": [t.to_dict() for t in self.traces],
            "skipped": [s.to_dict() for s in self.skipped],
        }

    def save(self, path, summary: dict | None = None):
        """Write ``trace.json`` atomically (strict JSON)."""
        from .io import write_json

        return write_json(path, self.to_dict(summary))

    def counts(self) -> dict[str, int]:
        from .facts import SKIP_REASONS

        reasons = {r: sum(1 for s in self.skipped if s.reason == r) for r in SKIP_REASONS}
        passed = len(self.traces) if self.n_passed is None else self.n_passed
        return {"candidates": passed + len(self.skipped), "kept": passed, "traced": len(self.traces), **reasons}


# --------------------------------------------------------------------------- restorations


def restored_layers(kind: str, layer: int, n_layers: int, window: int) -> range:
    """Layers restored for ``(kind, layer)``: ``hidden`` one; ``mlp``/``attn`` ROME's window.

    ROME: ``range(max(0, l - window // 2), min(L, l - (-window // 2)))``, i.e. ``window`` layers
    centred on ``l``, clipped at both ends.
    """
    if kind == "hidden":
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


@dataclass(frozen=True)
class Restoration:
    """Put the clean activations of ``sites`` (``(kind, layer)`` pairs) back at token ``position``."""

    position: int
    sites: tuple[tuple[str, int], ...]


def restoration_cells(kinds: Sequence[str], positions: Iterable[int], n_layers: int, window: int) -> dict[Restoration, list[tuple[str, int, int]]]:
    """Each distinct restoration and the ``(kind, position, layer)`` cells of the IE tables it fills.

    Cells share a restoration when their windows coincide (a window clipped at both ends of a
    shallow model); it is run once.
    """
    cells: dict[Restoration, list[tuple[str, int, int]]] = {}
    for kind in kinds:
        for t in positions:
            for layer in range(n_layers):
                sites = tuple((kind, l2) for l2 in restored_layers(kind, layer, n_layers, window))
                cells.setdefault(Restoration(t, sites), []).append((kind, t, layer))
    return cells


def _forward_kwargs(bridge, model) -> dict:
    return {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}


def site_patches(restorations: Sequence[Restoration], clean: dict[str, torch.Tensor], samples: int, start: int, device, skip=None) -> list:
    """``(hook name, fn)`` pairs writing each restoration's clean activations into its rows.

    Rows are restoration-major (``r * samples + j``), positions relative to the run's first token
    ``start``; ``skip(r, kind, layer)`` drops sites handled otherwise (put into the residual a
    row enters the stack with).
    """
    per_hook: dict[str, tuple[list[int], list[int], list[torch.Tensor]]] = {}
    for r, rest in enumerate(restorations):
        if rest.position < start:
            raise ValueError(f"restoration at {rest.position} is before the run's first token {start}")
        for kind, layer in rest.sites:
            if skip is not None and skip(r, kind, layer):
                continue
            rows, positions, values = per_hook.setdefault(hook_name(kind, layer), ([], [], []))
            rows.extend(range(r * samples, (r + 1) * samples))
            positions.extend([rest.position - start] * samples)
            values.append(clean[kind][layer, rest.position].expand(samples, -1))

    def make_patch(rows, positions, values):
        row_idx = torch.tensor(rows, device=device)
        pos_idx = torch.tensor(positions, device=device)
        value = torch.cat(values)

        def patch(act, hook):
            act = act.clone()
            act[row_idx, pos_idx] = value.to(act.dtype)
            return act

        return patch

    return [(name, make_patch(*spec)) for name, spec in per_hook.items()]


@torch.no_grad()
def patched_probs(
    bridge,
    input_ids: torch.Tensor,
    restorations: Sequence[Restoration],
    *,
    clean: dict[str, torch.Tensor],
    noise: torch.Tensor,
    subject_range: tuple[int, int],
    answer_id: int,
    start: int = 0,
    cache_kwargs: dict | None = None,
    forward_kwargs: dict | None = None,
) -> torch.Tensor:
    """Mean ``P(answer)`` over the noise samples for each restoration, all in one forward pass.

    Rows are restoration-major (``row = r * samples + j`` uses noise draw ``j``). The noise is
    added to the subject tokens' embeddings (``hook_embed``); each restored site's hook writes
    the clean activation (``clean[kind][layer, position]``) into its rows at its position. With
    ``start > 0`` only tokens ``start..T-1`` are run, on the KV cache in ``cache_kwargs`` (the
    corrupted run's keys and values of tokens ``0..start-1``, one row per row here); every
    restored position must be ``>= start``.
    """
    samples = noise.shape[0]
    n = len(restorations)
    device = input_ids.device
    ids = input_ids[start:].unsqueeze(0).expand(n * samples, -1)
    s, e = subject_range
    a = max(s, start)
    noise_rows = noise[:, a - s : e - s].to(device).repeat(n, 1, 1) if e > a else None

    def add_noise(act, hook):
        if noise_rows is None:
            return act
        act = act.clone()
        act[:, a - start : e - start] += noise_rows.to(act.dtype)
        return act

    hooks = [(EMBED_HOOK, add_noise)] + site_patches(restorations, clean, samples, start, device)
    kwargs = dict(forward_kwargs or {})
    kwargs.update(cache_kwargs or {})
    with bridge.hooks(fwd_hooks=hooks):
        logits = bridge(ids, return_type="logits", **kwargs)
    probs = torch.softmax(logits[:, -1].float(), dim=-1)[:, answer_id]
    return probs.view(n, samples).mean(dim=1)


def entry_layer(restoration: Restoration) -> int:
    """The first block a restoration's rows must run: its first restored site's layer, or for a
    ``hidden`` site at ``l`` block ``l + 1`` (the clean state enters with the residual stream)."""
    return min(layer + 1 if kind == "hidden" else layer for kind, layer in restoration.sites)


@torch.no_grad()
def stacked_probs(
    bridge,
    model,
    restorations: Sequence[Restoration],
    *,
    clean: dict[str, torch.Tensor],
    states: torch.Tensor,
    answer_id: int,
    arguments: LayerArguments,
    start: int = 0,
    prefix=None,
) -> torch.Tensor:
    """:func:`patched_probs` entering the stack mid-way: each restoration runs only its layers.

    ``restorations`` must be ordered by :func:`entry_layer`; ``states`` are the corrupted runs'
    block inputs ``[L + 1, samples, T, d]`` (:func:`base_runs`), so the rows of restoration ``r``
    enter at its entry layer with noise draw ``j``'s residual stream there (tokens ``start..``;
    a ``hidden`` site just below the entry is written into it), and the other sites are patched
    by hooks as in :func:`patched_probs`. ``arguments`` are :func:`tracing.stack.layer_arguments`
    of the tokens ``start..T-1``; ``prefix`` is the corrupted runs' KV cache (row ``1 + j`` is
    draw ``j``), used when ``start > 0``.
    """
    samples = states.shape[1]
    entries = [entry_layer(r) for r in restorations]
    row_sample = torch.arange(len(restorations) * samples) % samples

    def entered(r: int, kind: str, layer: int) -> bool:
        return kind == "hidden" and layer + 1 == entries[r]

    def entering(layer: int, rows: list[int]) -> torch.Tensor:
        x = states[layer, row_sample[rows].to(states.device), start:].clone()
        for i, row in enumerate(rows):
            rest = restorations[row // samples]
            for kind, site in rest.sites:
                if entered(row // samples, kind, site):
                    x[i, rest.position - start] = clean[kind][site, rest.position]
        return x

    device = states.device
    rows = StackRows([e for e in entries for _ in range(samples)], entering, 1 + row_sample)
    hooks = site_patches(restorations, clean, samples, start, device, skip=entered)
    logits = run_stack(bridge, model, rows, arguments, prefix, start, hooks=hooks)
    probs = torch.softmax(logits.float(), dim=-1)[:, answer_id]
    return probs.view(len(restorations), samples).mean(dim=1)


@torch.no_grad()
def clean_run(bridge, input_ids: torch.Tensor, kinds: Sequence[str], answer_id: int, n_layers: int) -> tuple[float, dict[str, torch.Tensor]]:
    """``P(answer)`` of the clean prompt and its activations ``{kind: [L, T, d]}``."""
    store: dict[str, torch.Tensor] = {}

    def grab(act, hook):
        store[hook.name] = act[0].detach().clone()

    names = {(k, l): hook_name(k, l) for k in kinds for l in range(n_layers)}
    with bridge.hooks(fwd_hooks=[(n, grab) for n in names.values()]):
        logits = bridge(input_ids.unsqueeze(0), return_type="logits")
    p = torch.softmax(logits[0, -1].float(), dim=-1)[answer_id].item()
    acts: dict[str, list[torch.Tensor]] = {}
    for (k, l), n in names.items():  # hooks see the canonical name of an alias
        acts.setdefault(k, []).append(store[bridge.hook_dict[n].name])
    return p, {k: torch.stack(v) for k, v in acts.items()}


@torch.no_grad()
def base_runs(bridge, model, input_ids: torch.Tensor, noise: torch.Tensor, subject_range: tuple[int, int], answer_id: int, kinds: Sequence[str], *, with_cache: bool, with_states: bool = False, forward_kwargs: dict | None = None):
    """The clean run and the corrupted runs in one forward pass of ``1 + samples`` rows.

    Returns ``(p, clean, p_star, cache, states)``: ``P(answer)`` of row 0 (clean), its activations
    ``{kind: [L, T, d]}``, the mean ``P(answer)`` of rows ``1..samples`` (noise on the subject's
    embeddings), with ``with_cache`` the KV cache of all rows (row ``1 + j`` is noise draw ``j``)
    and with ``with_states`` the corrupted rows' residual stream entering every block and leaving
    the last, ``[L + 1, samples, T, d]`` (else ``None``).
    """
    n_layers = int(bridge.cfg.n_layers)
    s, e = subject_range
    noise_dev = noise.to(input_ids.device)
    store: dict[str, torch.Tensor] = {}

    def add_noise(act, hook):
        act = act.clone()
        act[1:, s:e] += noise_dev.to(act.dtype)
        return act

    def grab(act, hook):
        store[hook.name] = act[0].detach().clone()

    names = {(k, l): hook_name(k, l) for k in kinds for l in range(n_layers)}
    kwargs = dict(forward_kwargs or {})
    cache = None
    if with_cache:
        cache = new_cache(model)
        kwargs.update({cache_keyword(model): cache, "use_cache": True})
    recording = recording_block_inputs(bridge) if with_states else contextlib.nullcontext([])
    with bridge.hooks(fwd_hooks=[(EMBED_HOOK, add_noise)] + [(n, grab) for n in names.values()]), recording as inputs:
        logits = bridge(input_ids.unsqueeze(0).expand(1 + noise.shape[0], -1), return_type="logits", **kwargs)
    probs = torch.softmax(logits[:, -1].float(), dim=-1)[:, answer_id]
    acts: dict[str, list[torch.Tensor]] = {}
    for (k, l), n in names.items():  # hooks see the canonical name of an alias
        acts.setdefault(k, []).append(store[bridge.hook_dict[n].name])
    states = torch.stack(inputs)[:, 1:] if with_states else None
    return probs[0].item(), {k: torch.stack(v) for k, v in acts.items()}, probs[1:].mean().item(), cache, states


# --------------------------------------------------------------------------- batching


def _bridge_dims(bridge) -> dict[str, int]:
    cfg = bridge.cfg
    d = int(cfg.d_model)
    heads = int(getattr(cfg, "n_heads", 1) or 1)
    kv_heads = int(getattr(cfg, "n_key_value_heads", None) or heads)
    d_head = int(getattr(cfg, "d_head", None) or d // heads)
    return {
        "d_model": d,
        "d_mlp": int(getattr(cfg, "d_mlp", None) or 4 * d),
        "n_layers": int(cfg.n_layers),
        "n_heads": heads,
        "d_kv": kv_heads * d_head,
        "d_vocab": int(getattr(cfg, "d_vocab", None) or 50_000),
    }


def memory_budget_bytes(device: torch.device, memory_mb: int | None) -> int:
    """The per-forward activation budget: ``memory_mb``, else 1 GiB on CPU / half the free GPU memory."""
    if memory_mb is not None:
        return int(memory_mb) * 2**20
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    return DEFAULT_MEMORY_MB * 2**20


def auto_batch_rows(dims: dict[str, int], n_tokens: int, budget_bytes: int, elem_bytes: int = 4) -> int:
    """Rows per forward that fit ``budget_bytes`` for ``n_tokens``-token rows (an estimate).

    Per row and token: the residual stream and attention/MLP intermediates of one layer at a
    time (~``8·d_model + 3·d_mlp + 2·heads·T`` values; no gradients are kept), the copied and
    grown KV cache (``4·L·d_kv``), and one position's logits.
    """
    d, T = dims, max(1, n_tokens)
    per_token = 8 * d["d_model"] + 3 * d["d_mlp"] + 2 * d["n_heads"] * T + 4 * d["n_layers"] * d["d_kv"]
    per_row = elem_bytes * (T * per_token + 2 * d["d_vocab"])
    return max(1, int(budget_bytes // per_row))


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- one fact


def restorations_for(tf: TokenizedFact, n_layers: int, config: TraceConfig, positions: Sequence[int] | None = None) -> dict[Restoration, list[tuple[str, int, int]]]:
    """The distinct restorations :func:`trace_fact` runs for ``tf`` and the IE cells each fills.

    Positions before the first subject token see no noise, so restoring them changes nothing
    (their IE is exactly 0) and they are not run; ``positions`` restricts the rest.
    """
    s = tf.subject_range[0]
    wanted = range(s, len(tf.input_ids)) if positions is None else sorted(t for t in set(positions) if t >= s)
    return restoration_cells(config.kinds, wanted, n_layers, config.window)


def restoration_work(restorations: Iterable[Restoration], n_tokens: int, n_layers: int, samples: int, *, suffix: bool, skip_layers: bool) -> int:
    """Token·layer evaluations of running ``restorations`` (rows × tokens × layers), as
    :func:`trace_fact` runs them: tokens from the restored one on with ``suffix``, layers from
    :func:`entry_layer` on with ``skip_layers``."""
    total = 0
    for rest in restorations:
        tokens = n_tokens - rest.position if suffix else n_tokens
        layers = n_layers - entry_layer(rest) if skip_layers else n_layers
        total += samples * tokens * layers
    return total


def fact_work(tf: TokenizedFact, n_layers: int, config: TraceConfig, *, suffix: bool, skip_layers: bool, positions: Sequence[int] | None = None) -> int:
    """Token·layer evaluations of tracing ``tf`` exactly: the base runs and every restoration."""
    T = len(tf.input_ids)
    base = (1 + config.samples) * T * n_layers
    return base + restoration_work(restorations_for(tf, n_layers, config, positions), T, n_layers, config.samples, suffix=suffix, skip_layers=skip_layers)


@torch.no_grad()
def trace_fact(
    bridge,
    model,
    tf: TokenizedFact,
    noise: torch.Tensor,
    config: TraceConfig,
    *,
    suffix: bool = False,
    skip_layers: bool = False,
    batch_rows: int | None = None,
    positions: Sequence[int] | None = None,
    advance: Callable[[int], object] | None = None,
) -> FactTrace:
    """Trace one fact exactly (batched); ``noise`` is ``[samples, n_subject_tokens, d_model]``.

    ``suffix``: run only the tokens from the restored one on (the model's KV cache must allow it,
    :func:`tracing.bridge.suffix_cache_works`); ``skip_layers``: run only the layers from the
    first restored one on (:func:`tracing.stack.stack_entry_works`); ``positions``: restore only
    these tokens (the IE elsewhere is left 0); ``advance(units)`` is called with the token·layer
    evaluations of each finished forward (:func:`fact_work` in total), for progress bars.
    """
    device = next(bridge.parameters()).device
    n_layers = int(bridge.cfg.n_layers)
    ids = torch.tensor(tf.input_ids, device=device)
    T = len(tf.input_ids)
    samples = noise.shape[0]
    fkw = _forward_kwargs(bridge, model)
    if batch_rows is None:
        batch_rows = auto_batch_rows(_bridge_dims(bridge), T, memory_budget_bytes(device, config.memory_mb))
    per_chunk = max(1, batch_rows // samples)
    advance = advance or (lambda units: None)

    p_clean, clean, p_corrupt, cache, states = base_runs(bridge, model, ids, noise, tf.subject_range, tf.answer_id, config.kinds, with_cache=suffix, with_states=skip_layers, forward_kwargs=fkw)
    advance((1 + samples) * T * n_layers)

    probs = {k: np.full((T, n_layers), p_corrupt, dtype=np.float64) for k in config.kinds}
    cells = restorations_for(tf, n_layers, config, positions)
    work = list(cells)
    groups = [[r for r in work if r.position == t] for t in sorted({r.position for r in work})] if suffix else [work]
    key = cache_keyword(model) if suffix else None
    for group in groups:
        start = group[0].position if suffix else 0
        if skip_layers:
            group = sorted(group, key=entry_layer)  # rows join the batch as the depth grows
            first_row = torch.tensor([1], device=device)  # one corrupted row sets the suffix's positions and mask
            arguments = layer_arguments(bridge, model, ids[start:], prefix_cache(cache, start, first_row) if start > 0 else None, fkw)
        for chunk in _chunks(group, per_chunk):
            if skip_layers:
                p = stacked_probs(bridge, model, chunk, clean=clean, states=states, answer_id=tf.answer_id, arguments=arguments, start=start, prefix=cache)
            else:
                cache_kwargs = None
                if suffix and start > 0:
                    rows = 1 + torch.arange(len(chunk) * samples, device=device) % samples  # cache row 0 is the clean run
                    cache_kwargs = {key: prefix_cache(cache, start, rows), "use_cache": True}
                p = patched_probs(
                    bridge, ids, chunk, clean=clean, noise=noise, subject_range=tf.subject_range,
                    answer_id=tf.answer_id, start=start, cache_kwargs=cache_kwargs, forward_kwargs=fkw,
                )
            for rest, value in zip(chunk, p.tolist()):
                for kind, t, layer in cells[rest]:
                    probs[kind][t, layer] = value
            advance(restoration_work(chunk, T, n_layers, samples, suffix=suffix, skip_layers=skip_layers))
    ie = {k: probs[k] - p_corrupt for k in config.kinds}
    return FactTrace(tf.fact, list(tf.tokens), list(tf.input_ids), tuple(tf.subject_range), tf.answer_id, tf.answer_token, p_clean, p_corrupt, ie, "exact", config.window)
