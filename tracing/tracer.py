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
* positions before the first subject token see no noise, so restoring them restores what is
  already there: their IE is exactly 0 and they are not run.

:func:`tracing.reference.trace_fact_reference` is the plain one-restoration-per-forward version
(ROME's own loop); the tests hold the two to ``max |ΔIE| <= 1e-5`` in fp32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .bridge import EMBED_HOOK, accepts_logits_to_keep, bridged, require_causal_lm, require_supported, cache_keyword, hook_name, model_name, new_cache, prefix_cache, suffix_cache_works
from .config import KINDS, METHODS, TraceConfig  # noqa: F401 - TraceConfig is part of this module's API
from .errors import AmnesiaError
from .facts import Fact, FactSet, Skipped, TokenizedFact, greedy_next_tokens, prepare_facts, tokenize_fact
from .noise import draw_noise, embedding_std, parse_noise

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
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FactTrace":
        fact = Fact(d["prompt"], d["subject"], d["answer"], d.get("id", ""), d.get("relation", ""))
        return cls(
            fact, list(d["tokens"]), list(d.get("input_ids", [])), tuple(d["subject_range"]), int(d.get("answer_id", -1)),
            d.get("answer_token", ""), float(d["p_clean"]), float(d["p_corrupt"]),
            {k: np.asarray(v, dtype=np.float64) for k, v in d["ie"].items()}, d.get("method", "exact"), int(d.get("window", 10)),
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

    per_hook: dict[str, tuple[list[int], list[int], list[torch.Tensor]]] = {}
    for r, rest in enumerate(restorations):
        if rest.position < start:
            raise ValueError(f"restoration at {rest.position} is before the run's first token {start}")
        for kind, layer in rest.sites:
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

    hooks = [(EMBED_HOOK, add_noise)] + [(name, make_patch(*spec)) for name, spec in per_hook.items()]
    kwargs = dict(forward_kwargs or {})
    kwargs.update(cache_kwargs or {})
    with bridge.hooks(fwd_hooks=hooks):
        logits = bridge(ids, return_type="logits", **kwargs)
    probs = torch.softmax(logits[:, -1].float(), dim=-1)[:, answer_id]
    return probs.view(n, samples).mean(dim=1)


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
def base_runs(bridge, model, input_ids: torch.Tensor, noise: torch.Tensor, subject_range: tuple[int, int], answer_id: int, kinds: Sequence[str], *, with_cache: bool, forward_kwargs: dict | None = None):
    """The clean run and the corrupted runs in one forward pass of ``1 + samples`` rows.

    Returns ``(p, clean, p_star, cache)``: ``P(answer)`` of row 0 (clean), its activations
    ``{kind: [L, T, d]}``, the mean ``P(answer)`` of rows ``1..samples`` (noise on the subject's
    embeddings) and, with ``with_cache``, the KV cache of all rows (row ``1 + j`` is noise draw ``j``).
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
    with bridge.hooks(fwd_hooks=[(EMBED_HOOK, add_noise)] + [(n, grab) for n in names.values()]):
        logits = bridge(input_ids.unsqueeze(0).expand(1 + noise.shape[0], -1), return_type="logits", **kwargs)
    probs = torch.softmax(logits[:, -1].float(), dim=-1)[:, answer_id]
    acts: dict[str, list[torch.Tensor]] = {}
    for (k, l), n in names.items():  # hooks see the canonical name of an alias
        acts.setdefault(k, []).append(store[bridge.hook_dict[n].name])
    return probs[0].item(), {k: torch.stack(v) for k, v in acts.items()}, probs[1:].mean().item(), cache


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


@torch.no_grad()
def trace_fact(
    bridge,
    model,
    tf: TokenizedFact,
    noise: torch.Tensor,
    config: TraceConfig,
    *,
    suffix: bool = False,
    batch_rows: int | None = None,
) -> FactTrace:
    """Trace one fact exactly (batched); ``noise`` is ``[samples, n_subject_tokens, d_model]``."""
    device = next(bridge.parameters()).device
    n_layers = int(bridge.cfg.n_layers)
    ids = torch.tensor(tf.input_ids, device=device)
    T = len(tf.input_ids)
    s, e = tf.subject_range
    samples = noise.shape[0]
    fkw = _forward_kwargs(bridge, model)
    if batch_rows is None:
        batch_rows = auto_batch_rows(_bridge_dims(bridge), T, memory_budget_bytes(device, config.memory_mb))
    per_chunk = max(1, batch_rows // samples)

    p_clean, clean, p_corrupt, cache = base_runs(bridge, model, ids, noise, tf.subject_range, tf.answer_id, config.kinds, with_cache=suffix, forward_kwargs=fkw)

    # Positions before the subject see no noise: restoring them changes nothing (IE = 0).
    positions = list(range(s, T))
    probs = {k: np.full((T, n_layers), p_corrupt, dtype=np.float64) for k in config.kinds}
    cells = restoration_cells(config.kinds, positions, n_layers, config.window)
    work = list(cells)
    groups = [[r for r in work if r.position == t] for t in positions] if suffix else [work]
    key = cache_keyword(model) if suffix else None
    for group in groups:
        for chunk in _chunks(group, per_chunk):
            start = chunk[0].position if suffix else 0
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
    ie = {k: probs[k] - p_corrupt for k in config.kinds}
    return FactTrace(tf.fact, list(tf.tokens), list(tf.input_ids), tuple(tf.subject_range), tf.answer_id, tf.answer_token, p_clean, p_corrupt, ie, "exact", config.window)


# --------------------------------------------------------------------------- many facts


def trace_facts(
    model,
    tokenizer,
    facts: Sequence[Fact] | FactSet,
    config: TraceConfig = TraceConfig(),
    *,
    progress: bool = True,
    check_prediction: bool = True,
    embedding_std_value: float | None = None,
) -> TraceResult:
    """Filter ``facts`` (ROME's known-facts filter), then trace every kept fact.

    ``facts`` are :class:`Fact` objects (tokenized and filtered here) or an already prepared
    :class:`FactSet`. The noise level ``sN`` is N × the std of the kept facts' subject-token
    embeddings (or of ``embedding_std_value`` when given). The model is bridged for the run and
    restored afterwards. Raises :class:`AmnesiaError` when no fact is left to trace.
    """
    config.check()
    require_supported(model)
    start_time = time.time()
    prepared = facts if isinstance(facts, FactSet) else prepare_facts(model, tokenizer, facts, max_tokens=config.max_tokens, check_prediction=check_prediction)
    if not prepared.kept:
        counts = ", ".join(f"{v} {k}" for k, v in prepared.counts().items() if k != "kept" and v)
        raise AmnesiaError(f"no facts to trace: {len(prepared.skipped)} candidate(s), none kept ({counts or 'the fact set is empty'})")
    level = parse_noise(config.noise)
    with bridged(model, tokenizer, dtype=torch.float32 if config.float32 else None) as bridge:
        emb_std = embedding_std_value if embedding_std_value is not None else (embedding_std(bridge, prepared.kept) if level.relative else None)
        noise_std = level.std(emb_std)
        suffix = bool(config.suffix and config.method == "exact" and suffix_cache_works(bridge, model, torch.tensor(prepared.kept[0].input_ids, device=next(model.parameters()).device)))
        d_model = int(bridge.cfg.d_model)
        traces = []
        for index, tf in enumerate(tqdm(prepared.kept, desc=f"trace ({config.method})", disable=not progress, unit="fact")):
            s, e = tf.subject_range
            noise = draw_noise(config.seed, index, config.samples, e - s, d_model, noise_std)
            if config.method == "attribution":
                from .attribution import attribute_fact

                traces.append(attribute_fact(bridge, tf, noise, config))
            else:
                traces.append(trace_fact(bridge, model, tf, noise, config, suffix=suffix, batch_rows=config.batch_size))
        n_layers = int(bridge.cfg.n_layers)
    return TraceResult(traces, list(prepared.skipped), config, model_name(model), n_layers, noise_std, emb_std, suffix, time.time() - start_time)


def trace_prompt(
    model,
    tokenizer,
    prompt: str,
    subject: str,
    answer: str | None = None,
    config: TraceConfig = TraceConfig(),
) -> FactTrace:
    """Trace one prompt: the notebook entry point.

    ``answer`` defaults to the model's own greedy next token (as ROME does for a single prompt);
    a given answer must be the model's prediction. Raises :class:`AmnesiaError` when the subject
    is not in the prompt or the model does not predict the answer.
    """
    config.check()
    require_causal_lm(model)
    answer_id = None
    if answer is None:
        ids = tokenize_fact(tokenizer, Fact(prompt, subject, "?")).input_ids
        answer_id = greedy_next_tokens(model, [ids])[0]
        answer = tokenizer.decode([answer_id])
    fact = Fact(prompt, subject, answer)
    tf = tokenize_fact(tokenizer, fact, answer_id=answer_id)  # a subject missing from the prompt is an error here
    if tf.n_tokens > config.max_tokens:
        raise AmnesiaError(f"cannot trace {prompt!r}: {tf.n_tokens} tokens, more than max_tokens {config.max_tokens}")
    predicted = greedy_next_tokens(model, [tf.input_ids])[0]
    if predicted != tf.answer_id:
        raise AmnesiaError(f"cannot trace {prompt!r}: the model predicts {tokenizer.decode([predicted])!r}, not the answer's first token {tf.answer_token!r}")
    return trace_facts(model, tokenizer, FactSet(kept=[tf]), config, progress=False).traces[0]
