"""Causal tracing (ROME, Meng et al. 2022): where does a model store a fact?

Standalone: takes a Hugging Face causal LM and its tokenizer, hooks it through TransformerLens'
``TransformerBridge`` (on the same model object, restored afterwards) and imports nothing else
from this project. Trace one prompt in a notebook::

    from tracing import trace_prompt, plot_fact
    trace = trace_prompt(model, tokenizer, "What is the birth date of Xanthe Yarrow?", subject="Xanthe Yarrow")
    plot_fact(trace, "heatmap.png")           # trace.ie["mlp"] is the [tokens × layers] table

Many facts, aggregated and turned into a layer choice::

    from tracing import TraceConfig, aggregate, facts_from_rows, select_layers, trace_facts
    facts, skipped = facts_from_rows(rows)                    # SemEval-layout QA rows
    result = trace_facts(model, tokenizer, facts, TraceConfig(samples=10, noise="s3"))
    summary = aggregate(result.traces)                        # AIE by token group, 95 % CIs, TE
    select_layers(summary, model=result.model).save("layers.json")

Modules: ``config`` (the settings, importable without torch), ``facts`` (facts, subject spans, the ROME filter), ``noise``, ``bridge`` (booting and
restoring the model), ``tracer`` (batched exact tracing of one fact), ``driver`` (many facts: filter, noise, the method), ``reference`` (ROME's plain loop),
``attribution`` (attribution patching), ``aggregate``, ``selection``, ``plots``; plus the
project-wide ``errors``, ``io`` and ``layers`` (the ``layers.json`` schema).

Public names are loaded on first use, so ``import tracing.errors`` (which every other package
does) does not pull in torch or TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "aggregation": ("aggregate", "layer_profile", "mean_ci", "spearman"),
    "attribution": ("attribute_fact",),
    "bridge": ("bridged", "hook_name"),
    "config": ("TraceConfig", "SelectionConfig", "KINDS", "TOKEN_GROUPS", "parse_noise"),
    "errors": ("AmnesiaError",),
    "facts": ("SKIP_REASONS", "Fact", "FactSet", "Skipped", "TokenizedFact", "facts_from_records", "facts_from_rows", "parse_question", "prepare_facts", "subject_token_range", "token_groups", "tokenize_fact"),
    "layers": ("LayerSelection", "load_layers"),
    "noise": ("draw_noise", "embedding_std"),
    "plots": ("plot_aie", "plot_fact"),
    "reference": ("trace_fact_reference",),
    "selection": ("select_layers",),
    "driver": ("trace_facts", "trace_prompt"),
    "tracer": ("FactTrace", "TraceResult", "restored_layers", "trace_fact"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tracing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs
    from .aggregation import aggregate, layer_profile, mean_ci, spearman
    from .attribution import attribute_fact
    from .bridge import bridged, hook_name
    from .config import KINDS, TOKEN_GROUPS, SelectionConfig, TraceConfig, parse_noise
    from .errors import AmnesiaError
    from .facts import SKIP_REASONS, Fact, FactSet, Skipped, TokenizedFact, facts_from_records, facts_from_rows, parse_question, prepare_facts, subject_token_range, token_groups, tokenize_fact
    from .layers import LayerSelection, load_layers
    from .noise import draw_noise, embedding_std
    from .plots import plot_aie, plot_fact
    from .reference import trace_fact_reference
    from .selection import select_layers
    from .driver import trace_facts, trace_prompt
    from .tracer import FactTrace, TraceResult, restored_layers, trace_fact
