"""TransformerLens ``TransformerBridge`` over the caller's own HF model, and back.

:func:`bridged` boots a bridge on the *same* model object the other stages use (no copy, no
reload) and undoes the boot on exit. Booting wraps the model's submodules in place (its
parameter names gain ``_original_component``, its attention switches to eager, and with
transformers 5 its KV cache stops working because the bridge's attention reads the cache
from a ``past_key_values`` keyword that transformers now calls ``cache``). So the context manager
snapshots every module's children first and restores them, the attention implementation and the
config's ``architectures`` afterwards: the model leaves the block exactly as it entered it.

Inside the block a small forward pre-hook on every attention bridge passes ``cache`` on as
``past_key_values`` so the bridge's own KV-cache update runs (the tracer's suffix trick relies on
it, and :func:`suffix_cache_works` checks the result numerically before it is used).

Hook points the tracer uses (:func:`hook_name`): ``hook_embed`` (token embeddings),
``blocks.{l}.hook_resid_post`` (``hidden``: the block's output residual stream),
``blocks.{l}.hook_mlp_out`` (``mlp``) and ``blocks.{l}.hook_attn_out`` (``attn``).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import warnings
from typing import Iterator

import torch

from .errors import AmnesiaError

KINDS = ("hidden", "mlp", "attn")
EMBED_HOOK = "hook_embed"
_HOOKS = {"hidden": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out", "attn": "blocks.{}.hook_attn_out"}


def hook_name(kind: str, layer: int) -> str:
    """The bridge hook point of ``kind`` (hidden | mlp | attn) at ``layer``."""
    if kind not in _HOOKS:
        raise AmnesiaError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    return _HOOKS[kind].format(layer)


def model_name(model) -> str:
    """The folder or Hub id a model came from (for messages and reports)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or type(model).__name__)


def architecture(model) -> str:
    config = getattr(model, "config", None)
    archs = getattr(config, "architectures", None) or []
    return archs[0] if archs else type(model).__name__


def _snapshot(model: torch.nn.Module) -> list[tuple[torch.nn.Module, dict]]:
    return [(m, dict(m._modules)) for m in model.modules()]


def _restore(snapshot: list[tuple[torch.nn.Module, dict]]) -> None:
    for module, children in snapshot:
        module._modules.clear()
        module._modules.update(children)


def _cache_pre_hook(module, args, kwargs):
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs["past_key_values"] = kwargs["cache"]
        return args, kwargs
    return None


def cache_keyword(model) -> str:
    """The HF forward's KV-cache keyword: ``cache`` (transformers >= 5.x) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def require_causal_lm(model) -> None:
    """Raise :class:`AmnesiaError` unless ``model`` is a decoder-only causal LM."""
    can_generate = getattr(model, "can_generate", None)
    if not callable(can_generate) or not can_generate() or getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise AmnesiaError(f"{model_name(model)}: architecture {architecture(model)} is not a decoder-only causal language model (causal tracing needs one)")


@contextlib.contextmanager
def bridged(model, tokenizer) -> Iterator:
    """Boot a ``TransformerBridge`` on ``model`` (in place) and restore ``model`` on exit.

    Raises :class:`AmnesiaError` for a model that is not a decoder-only causal LM or whose
    architecture ``TransformerBridge`` cannot boot or hook.
    """
    from transformer_lens.model_bridge import TransformerBridge

    require_causal_lm(model)
    name, arch = model_name(model), architecture(model)
    config = model.config
    snapshot = _snapshot(model)
    saved_archs = getattr(config, "architectures", None)
    saved_attn = getattr(config, "_attn_implementation", None)
    was_training = model.training
    hooks = []
    try:
        if not saved_archs:  # models built with from_config have none; the bridge needs one
            config.architectures = [type(model).__name__]
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        try:
            with warnings.catch_warnings(), _quiet_logging():
                warnings.simplefilter("ignore")
                bridge = TransformerBridge.boot_transformers(name, hf_model=model, tokenizer=tokenizer, device=device, dtype=dtype)
        except Exception as exc:  # the bridge raises ValueError/KeyError/... for what it cannot map
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise AmnesiaError(f"{name}: TransformerBridge does not support architecture {arch} ({type(exc).__name__}: {first})") from None
        blocks = getattr(bridge, "blocks", None)
        if blocks is None or len(blocks) == 0:
            raise AmnesiaError(f"{name}: TransformerBridge exposes no transformer blocks for architecture {arch}")
        needed = [EMBED_HOOK] + [hook_name(k, 0) for k in KINDS]
        missing = [h for h in needed if h not in bridge.hook_dict]
        if missing:
            raise AmnesiaError(f"{name}: TransformerBridge has no hook point(s) {', '.join(missing)} for architecture {arch}")
        for block in blocks:
            attn = getattr(block, "attn", None)
            if attn is not None:
                hooks.append(attn.register_forward_pre_hook(_cache_pre_hook, with_kwargs=True))
        model.eval()
        yield bridge
    finally:
        for h in hooks:
            h.remove()
        _restore(snapshot)
        config.architectures = saved_archs
        if saved_attn is not None and getattr(config, "_attn_implementation", None) != saved_attn:
            try:
                model.set_attn_implementation(saved_attn)
            except Exception:  # older transformers: the config field is the switch
                config._attn_implementation = saved_attn
        model.train(was_training)


@contextlib.contextmanager
def _quiet_logging():
    loggers = [logging.getLogger(n) for n in ("transformer_lens", "transformers", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def new_cache(model):
    """An empty HF ``DynamicCache`` for ``model`` (``None`` when this transformers has none)."""
    try:
        from transformers import DynamicCache
    except ImportError:  # pragma: no cover - very old transformers
        return None
    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()


def prefix_cache(cache, keep: int, rows: torch.Tensor):
    """A copy of ``cache`` cut to its first ``keep`` positions, rows picked by ``rows``."""
    out = copy.deepcopy(cache)
    total = out.get_seq_length()
    if keep < total:
        out.crop(keep - total)
    out.batch_select_indices(rows)
    return out


@torch.no_grad()
def suffix_cache_works(bridge, model, input_ids: torch.Tensor, *, atol: float = 1e-4) -> bool:
    """Whether running a suffix on a prefix's KV cache reproduces the full forward here.

    The tracer recomputes only the positions from the restored token on, reusing the corrupted
    run's keys and values before it; this checks that the model, its cache and the bridge agree
    (within ``atol`` on the last logits) before relying on it. Any exception means no.
    """
    if input_ids.shape[-1] < 2:
        return False
    try:
        row = input_ids.reshape(1, -1)
        ids = torch.cat([row, row.flip(-1)])  # two different rows, to check row selection too
        full = bridge(ids, return_type="logits")[:, -1].float()
        cache = new_cache(model)
        if cache is None:
            return False
        key = cache_keyword(model)
        bridge(ids, return_type="logits", use_cache=True, **{key: cache})
        keep = ids.shape[1] // 2
        order = torch.tensor([1, 0], device=ids.device)
        part = prefix_cache(cache, keep, order)
        suffix = bridge(ids[order, keep:], return_type="logits", use_cache=True, **{key: part})[:, -1].float()
        return bool(torch.allclose(full[order], suffix, atol=atol, rtol=1e-4))
    except Exception:  # noqa: BLE001 - any failure means: do not use the cache
        return False
