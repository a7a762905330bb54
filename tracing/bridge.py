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
import warnings
from typing import Iterator

import torch

from .config import KINDS  # noqa: F401 - part of this module's API
from .errors import AmnesiaError
from .logs import quiet_loggers

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


_STATE = ("_modules", "_parameters", "_buffers")


def _snapshot(model: torch.nn.Module) -> list[tuple[torch.nn.Module, list[dict], set]]:
    """Every module's children, parameters and buffers (the objects themselves, not copies)."""
    return [(m, [dict(getattr(m, key)) for key in _STATE], set(m._non_persistent_buffers_set)) for m in model.modules()]


def _restore(snapshot: list[tuple[torch.nn.Module, list[dict], set]]) -> None:
    """Put back what :func:`_snapshot` saw: booting the bridge rewires all three in place."""
    for module, states, non_persistent in snapshot:
        for key, saved in zip(_STATE, states):
            current = getattr(module, key)
            current.clear()
            current.update(saved)
        module._non_persistent_buffers_set.clear()
        module._non_persistent_buffers_set.update(non_persistent)


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


def require_supported(model) -> None:
    """Raise :class:`AmnesiaError` now for a model ``TransformerBridge`` cannot boot.

    The same architecture lookup the bridge's boot does, without booting: callers check before
    any work on the facts. (Booting can still fail later for a model it half supports.)
    """
    require_causal_lm(model)
    try:
        from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config
    except ImportError:  # another TransformerLens layout: booting will tell
        return
    config = model.config
    saved = getattr(config, "architectures", None)
    try:
        if not saved:
            config.architectures = [type(model).__name__]
        determine_architecture_from_hf_config(config)
    except Exception:  # noqa: BLE001 - ValueError for an architecture it has no adapter for
        raise AmnesiaError(
            f"{model_name(model)}: TransformerBridge does not support architecture {architecture(model)} "
            "(causal tracing needs an architecture TransformerLens can hook, e.g. OlmoForCausalLM, LlamaForCausalLM, GPT2LMHeadModel)"
        ) from None
    finally:
        config.architectures = saved


def _cast_floating(model: torch.nn.Module, dtype: torch.dtype) -> list:
    """Cast every floating parameter and buffer to ``dtype``; return what :func:`_uncast` needs."""
    changed = []
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_floating_point() and param.dtype != dtype:
                changed.append((module, name, True, param.dtype))
                param.data = param.data.to(dtype)
        for name, buf in module._buffers.items():
            if buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                changed.append((module, name, False, buf.dtype))
                module._buffers[name] = buf.to(dtype)
    return changed


def _uncast(changed: list) -> None:
    """Undo :func:`_cast_floating` tensor by tensor (exact for values that came from the old dtype)."""
    for module, name, is_param, dtype in changed:
        if is_param:
            module._parameters[name].data = module._parameters[name].data.to(dtype)
        else:
            module._buffers[name] = module._buffers[name].to(dtype)


@contextlib.contextmanager
def bridged(model, tokenizer, *, dtype: torch.dtype | None = None) -> Iterator:
    """Boot a ``TransformerBridge`` on ``model`` (in place) and restore ``model`` on exit.

    With ``dtype`` (e.g. ``torch.float32`` for a bf16 model) the model's floating parameters and
    buffers are cast for the duration and cast back tensor by tensor afterwards, which is exact.
    Raises :class:`AmnesiaError` for a model that is not a decoder-only causal LM or whose
    architecture ``TransformerBridge`` cannot boot, hook or run.
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
    cast = []
    try:
        if dtype is not None:
            cast = _cast_floating(model, dtype)
        if not saved_archs:  # models built with from_config have none; the bridge needs one
            config.architectures = [type(model).__name__]
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        try:
            with warnings.catch_warnings(), quiet_loggers("transformer_lens", "transformers", "root"):
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
        _probe(bridge, model, name, arch)
        yield bridge
    finally:
        for h in hooks:
            h.remove()
        _restore(snapshot)
        _uncast(cast)
        config.architectures = saved_archs
        if saved_attn is not None and getattr(config, "_attn_implementation", None) != saved_attn:
            try:
                model.set_attn_implementation(saved_attn)
            except Exception:  # older transformers: the config field is the switch
                config._attn_implementation = saved_attn
        model.train(was_training)


@torch.no_grad()
def _probe(bridge, model, name: str, arch: str) -> None:
    """One tiny forward through the bridge, so a model it cannot run fails here with one line."""
    device = next(model.parameters()).device
    try:
        bridge(torch.zeros((1, 2), dtype=torch.long, device=device), return_type="logits")
    except Exception as exc:  # noqa: BLE001 - report whatever the bridge raised, as one line
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise AmnesiaError(f"{name}: TransformerBridge cannot run architecture {arch} in {dtype} ({type(exc).__name__}: {first}); try float32") from None


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


def check_rows(model, input_ids: torch.Tensor, atol: float | None, fp32_atol: float, half_atol: float) -> tuple[torch.Tensor | None, float]:
    """The two different rows a numerical check runs (``input_ids`` and its reverse, to catch
    mixed-up rows too; ``None`` for fewer than 2 tokens) and its tolerance for the model's dtype."""
    if atol is None:
        atol = fp32_atol if next(model.parameters()).dtype == torch.float32 else half_atol
    if input_ids.shape[-1] < 2:
        return None, atol
    row = input_ids.reshape(1, -1)
    return torch.cat([row, row.flip(-1)]), atol


@torch.no_grad()
def suffix_cache_works(bridge, model, input_ids: torch.Tensor, *, atol: float | None = None) -> bool:
    """Whether running a suffix on a prefix's KV cache reproduces the full forward here.

    The tracer recomputes only the positions from the restored token on, reusing the corrupted
    run's keys and values before it; this checks that the model, its cache and the bridge agree
    on the last position's next-token probabilities (within ``atol``: 1e-5 in fp32, 1e-2 in 16-bit
    floats, whose kernels round differently with and without a cache; an ignored or misplaced
    cache is off by far more) before relying on it. Any exception means no.
    """
    ids, atol = check_rows(model, input_ids, atol, 1e-5, 1e-2)
    if ids is None:
        return False
    try:
        full = torch.softmax(bridge(ids, return_type="logits")[:, -1].float(), dim=-1)
        cache = new_cache(model)
        if cache is None:
            return False
        key = cache_keyword(model)
        bridge(ids, return_type="logits", use_cache=True, **{key: cache})
        keep = ids.shape[1] // 2
        order = torch.tensor([1, 0], device=ids.device)
        part = prefix_cache(cache, keep, order)
        suffix = torch.softmax(bridge(ids[order, keep:], return_type="logits", use_cache=True, **{key: part})[:, -1].float(), dim=-1)
        return bool((full[order] - suffix).abs().max() <= atol)
    except Exception:  # noqa: BLE001 - any failure means: do not use the cache
        return False
