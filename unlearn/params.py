"""Which parameters train: layer specs, module discovery, freezing, LoRA targets.

The unlearning stage edits only a few modules of a few decoder layers (the paper: the MLPs of
the layers causal tracing points at). This module

* parses a layer spec — ``all``, a range ``0-5``, a list ``0,1,2,7`` (ranges and single indices
  may be mixed: ``0-2,7``), a ``layers.json`` written by ``amnesia trace``, or a list of ints —
  into a sorted list of layer indices (:func:`parse_layers`);
* finds the decoder's layer list from the model's structure, with no per-architecture name
  tables: the largest ``nn.ModuleList`` whose length is the config's layer count
  (:func:`find_decoder_layers`), and inside a layer the MLP or attention block by well-known
  attribute names, else by class name (:func:`find_block`). This covers OLMo, OLMo-2, Llama,
  Mistral, Qwen, GPT-2 (``transformer.h[i].mlp`` / ``.attn``), GPT-NeoX/Pythia
  (``gpt_neox.layers[i].mlp`` / ``.attention``) and anything laid out the same way;
* freezes every parameter except those modules and reports the trainable share
  (:func:`select_parameters`);
* lists the linear layers inside the selected modules as LoRA targets (:func:`lora_targets`).

Kinds: ``mlp`` (the feed-forward block), ``attn`` (the attention block), ``all`` (the whole
decoder layer: attention, MLP and the layer's norms).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from tracing.errors import AmnesiaError
from tracing.layers import LayerSelection, load_layers

logger = logging.getLogger(__name__)

KINDS = ("mlp", "attn", "all")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "ff", "block_sparse_moe", "moe")
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention", "attn_layer")
MLP_CLASS_RE = re.compile(r"mlp|feedforward|ffn|moe", re.IGNORECASE)
ATTN_CLASS_RE = re.compile(r"attention|attn", re.IGNORECASE)
RANGE_RE = re.compile(r"^\s*\d+\s*(-\s*\d+\s*)?(,\s*\d+\s*(-\s*\d+\s*)?)*$")


@dataclass
class LayerSpec:
    """A parsed layer spec: the layers and, when it came from ``layers.json``, that file's selection."""

    layers: list[int]
    source: str
    selection: LayerSelection | None = None


def format_layers(layers: Sequence[int]) -> str:
    """``[0,1,2,3,7]`` → ``"0-3,7"`` (the inverse of the range syntax)."""
    parts: list[str] = []
    layers = sorted(layers)
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[j] + 1:
            j += 1
        parts.append(str(layers[i]) if i == j else f"{layers[i]}-{layers[j]}")
        i = j + 1
    return ",".join(parts)


def _check_range(layers: Sequence[int], n_layers: int, source: str) -> None:
    bad = [l for l in layers if l < 0 or l >= n_layers]
    if bad:
        raise AmnesiaError(f"layers {source!r}: layer {bad[0]} is out of range for a model with {n_layers} layers (valid: 0-{n_layers - 1})")


def parse_layers(spec: str | Path | Sequence[int] | LayerSelection, n_layers: int) -> LayerSpec:
    """Turn a layer spec into sorted, unique layer indices valid for a model with ``n_layers`` layers.

    ``spec`` is ``"all"``, a range/list string (``"0-5"``, ``"0,1,2,7"``, ``"0-2,7"``), the path
    of a ``layers.json`` (see :mod:`tracing.layers`), a :class:`LayerSelection`, or a sequence of ints.
    """
    if isinstance(spec, LayerSelection):
        return _from_selection(spec, n_layers, "layer selection")
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise AmnesiaError("layers []: expected at least one layer")
        if not all(isinstance(l, int) and not isinstance(l, bool) for l in spec):
            raise AmnesiaError(f"layers {list(spec)!r}: expected integers")
        layers = sorted(set(spec))
        _check_range(layers, n_layers, format_layers(layers))
        return LayerSpec(layers, format_layers(layers))
    text = str(spec).strip()
    if text == "all":
        return LayerSpec(list(range(n_layers)), "all")
    if RANGE_RE.match(text):
        layers: set[int] = set()
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                if lo > hi:
                    raise AmnesiaError(f"layers {text!r}: range {part} runs backwards (write {hi}-{lo})")
                layers.update(range(lo, hi + 1))
            else:
                layers.add(int(part))
        result = sorted(layers)
        _check_range(result, n_layers, text)
        return LayerSpec(result, text)
    path = Path(text).expanduser()
    if path.is_file() or path.suffix == ".json" or path.is_dir():
        if path.is_dir():
            path = path / "layers.json"
        return _from_selection(load_layers(path), n_layers, str(path))
    raise AmnesiaError(f"layers {text!r}: expected all, a range like 0-5, a list like 0,1,2,7, or the path of a layers.json")


def check_layer_spec(spec: str | Path | Sequence[int] | LayerSelection) -> None:
    """Check a layer spec without a model: its syntax, and that a ``layers.json`` exists and
    parses (the model's depth is checked by :func:`parse_layers` once it is loaded). ``auto`` (the
    caller traces first) passes."""
    if isinstance(spec, (LayerSelection, list, tuple)) or str(spec).strip() in ("auto", "all"):
        return
    text = str(spec).strip()
    path = Path(text).expanduser()
    if not RANGE_RE.match(text) and (path.is_dir() or path.is_file() or path.suffix == ".json"):
        load_layers(path / "layers.json" if path.is_dir() else path)
    else:
        parse_layers(text, 1 << 30)  # syntax only: every index is in range of so deep a model


def _from_selection(selection: LayerSelection, n_layers: int, source: str) -> LayerSpec:
    if selection.n_layers is not None and selection.n_layers != n_layers:
        raise AmnesiaError(
            f"{source}: selection was made on a model with {selection.n_layers} layers, this model has {n_layers}"
        )
    _check_range(selection.layers, n_layers, source)
    return LayerSpec(list(selection.layers), source, selection)


def resolve_kind(kind: str, spec: LayerSpec) -> str:
    """``auto`` → the layers file's kind when it is ``mlp`` or ``attn``, else ``mlp`` (the paper)."""
    if kind == "auto":
        if spec.selection is not None and spec.selection.kind in ("mlp", "attn"):
            return spec.selection.kind
        return "mlp"
    if kind not in KINDS:
        raise AmnesiaError(f"kind {kind!r}: expected one of auto, {', '.join(KINDS)}")
    return kind


# --------------------------------------------------------------------------- structure


def num_layers(model: nn.Module) -> int:
    """The decoder layer count (from the config, else from the layer list)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if isinstance(n, int) and n > 0:
        return n
    return len(find_decoder_layers(model)[1])


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(name, ModuleList)`` of the decoder layers: the largest ModuleList of the config's length.

    Works for any model that keeps its blocks in one ``nn.ModuleList`` (``model.layers`` in
    OLMo/Llama, ``transformer.h`` in GPT-2, ``gpt_neox.layers`` in Pythia), PEFT-wrapped or not.
    """
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (not isinstance(n, int) or len(module) == n):
            size = sum(p.numel() for p in module.parameters())
            candidates.append((size, name, module))
    if not candidates:
        raise AmnesiaError(
            f"{type(model).__name__}: found no list of {n} decoder layers (expected an nn.ModuleList of blocks as in OLMo, Llama, GPT-2, Pythia)"
        )
    _, name, layers = max(candidates, key=lambda c: c[0])
    return name, layers


def find_block(layer: nn.Module, kind: str) -> tuple[str, nn.Module]:
    """``(attribute, module)`` of the ``mlp`` or ``attn`` block inside one decoder layer."""
    names, pattern = (MLP_NAMES, MLP_CLASS_RE) if kind == "mlp" else (ATTN_NAMES, ATTN_CLASS_RE)
    children = dict(layer.named_children())
    for attr in names:
        if attr in children and any(True for _ in children[attr].parameters()):
            return attr, children[attr]
    matches = [(a, m) for a, m in children.items() if pattern.search(type(m).__name__) and any(True for _ in m.parameters())]
    if len(matches) == 1:
        return matches[0]
    have = ", ".join(f"{a} ({type(m).__name__})" for a, m in children.items()) or "none"
    raise AmnesiaError(f"{type(layer).__name__}: has no {kind} block (its submodules: {have}); use --kind all or another kind")


def selected_modules(model: nn.Module, layers: Sequence[int], kind: str) -> dict[str, nn.Module]:
    """Full module name → module, for ``kind`` in each of ``layers`` (names as in ``named_modules``)."""
    if kind not in KINDS:
        raise AmnesiaError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    prefix, blocks = find_decoder_layers(model)
    _check_range(layers, len(blocks), format_layers(layers))
    out = {}
    for i in layers:
        if kind == "all":
            out[f"{prefix}.{i}"] = blocks[i]
        else:
            attr, module = find_block(blocks[i], kind)
            out[f"{prefix}.{i}.{attr}"] = module
    return out


# --------------------------------------------------------------------------- freezing


@dataclass
class ParameterSelection:
    """What trains: the layers, the kind, the module names and the parameter counts."""

    layers: list[int]
    kind: str
    modules: list[str]
    trainable: int
    total: int
    lora: dict | None = None
    tensors: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def describe(self) -> str:
        what = f"LoRA (r={self.lora['r']}) on " if self.lora else ""
        return (
            f"trainable: {what}{self.kind} of layers {format_layers(self.layers)} ({len(self.modules)} modules): "
            f"{self.trainable:,} of {self.total:,} parameters ({100 * self.share:.2f}%)"
        )

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "kind": self.kind,
            "modules": self.modules,
            "trainable_parameters": self.trainable,
            "total_parameters": self.total,
            "trainable_share": self.share,
            "lora": self.lora,
        }


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (shared tensors counted once)."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def freeze_all_but(model: nn.Module, modules: dict[str, nn.Module]) -> list[str]:
    """Set ``requires_grad`` on the parameters of ``modules`` only; return the trainable tensor names."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in modules.values():
        for p in module.parameters():
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def select_parameters(model: nn.Module, layers: Sequence[int], kind: str) -> ParameterSelection:
    """Freeze ``model`` except ``kind`` in ``layers``; log and return the selection."""
    modules = selected_modules(model, layers, kind)
    names = freeze_all_but(model, modules)
    trainable, total = count_parameters(model)
    sel = ParameterSelection(sorted(layers), kind, list(modules), trainable, total, tensors=names)
    logger.info(sel.describe())
    return sel


def lora_targets(model: nn.Module, layers: Sequence[int], kind: str) -> list[str]:
    """Full names of the linear layers (``nn.Linear``, GPT-2's ``Conv1D``) inside the selection.

    PEFT matches a target name against the end of each module name at a dot boundary, so full
    names select exactly these modules and nothing in other layers.
    """
    targets = []
    for name, module in selected_modules(model, layers, kind).items():
        for sub, child in module.named_modules():
            if isinstance(child, nn.Linear) or type(child).__name__ == "Conv1D":
                targets.append(f"{name}.{sub}" if sub else name)
    if not targets:
        raise AmnesiaError(f"{kind} of layers {format_layers(layers)}: no linear layers to put LoRA adapters on; train full weights instead (drop --lora)")
    return targets


def apply_lora(model: nn.Module, layers: Sequence[int], kind: str, *, r: int = 8, alpha: int = 16, dropout: float = 0.0):
    """Wrap ``model`` with PEFT LoRA adapters on the selection; return ``(peft_model, ParameterSelection)``.

    Only the adapters train (every base weight stays frozen); merge them into the weights with
    ``merge_and_unload()`` before saving a plain model folder.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:  # pragma: no cover - peft is a dependency
        raise AmnesiaError("--lora needs the peft package (pip install peft)") from None
    targets = lora_targets(model, layers, kind)
    modules = list(selected_modules(model, layers, kind))
    conv1d = any(type(model.get_submodule(t)).__name__ == "Conv1D" for t in targets)  # GPT-2 stores weights transposed
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM", fan_in_fan_out=conv1d
    )
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(model, config)
    trainable, total = count_parameters(peft_model)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = {"r": r, "alpha": alpha, "dropout": dropout, "targets": targets}
    sel = ParameterSelection(sorted(layers), kind, modules, trainable, total, lora=lora, tensors=names)
    logger.info(sel.describe())
    return peft_model, sel


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable tensor (for tests and diagnostics)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
