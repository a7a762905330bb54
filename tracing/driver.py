"""Tracing many facts: ROME's known-facts filter, the noise level, then each kept fact traced by
the configured method — exact (:func:`tracing.tracer.trace_fact`), the attribution screen
(:func:`tracing.attribution.attribute_fact`) or ``auto`` (the screen plus exact tracing where
layer selection reads, :func:`tracing.attribution.auto_trace_fact`) — under one progress bar
counted in token·layer evaluations. :func:`trace_prompt` is the one-prompt notebook entry point.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .attribution import attribute_fact, auto_trace_fact
from .bridge import bridged, model_name, require_causal_lm, require_supported, suffix_cache_works
from .config import TraceConfig
from .errors import AmnesiaError
from .facts import Fact, FactSet, TokenizedFact, greedy_next_tokens, prepare_facts, token_groups, tokenize_fact
from .noise import draw_noise, embedding_std, parse_noise
from .stack import stack_entry_works
from .tracer import FactTrace, TraceResult, fact_work, restorations_for, trace_fact


# --------------------------------------------------------------------------- many facts


ATTRIBUTION_PASSES = 3  # a forward and a backward of the noisy rows: about three forwards' work


def screen_work(n_tokens: int, n_layers: int, samples: int) -> int:
    """Token·layer evaluations of the attribution screen: the noisy rows' forward and backward, the clean run."""
    return ATTRIBUTION_PASSES * samples * n_tokens * n_layers + n_tokens * n_layers


def confirm_positions(tf: TokenizedFact, groups: Sequence[str]) -> list[int]:
    """The token positions of ``groups`` (:func:`tracing.facts.token_groups`): what method auto traces exactly."""
    by_group = token_groups(len(tf.input_ids), tf.subject_range)
    return sorted({t for g in groups for t in by_group[g]})


def _fact_plan(tf: TokenizedFact, n_layers: int, config: TraceConfig, suffix: bool, skip_layers: bool) -> tuple[list[int] | None, int, int]:
    """``(positions traced exactly, token·layer evaluations, restorations)`` of one fact."""
    screen = screen_work(len(tf.input_ids), n_layers, config.samples)
    if config.method == "attribution":
        return [], screen, 0
    positions = confirm_positions(tf, config.confirm) if config.method == "auto" else None
    units = fact_work(tf, n_layers, config, suffix=suffix, skip_layers=skip_layers, positions=positions)
    restorations = len(restorations_for(tf, n_layers, config, positions))
    return positions, units + (screen if config.method == "auto" else 0), restorations


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
        first = torch.tensor(prepared.kept[0].input_ids, device=next(model.parameters()).device)
        exact = config.method in ("exact", "auto")
        suffix = bool(config.suffix and exact and suffix_cache_works(bridge, model, first))
        skip_layers = bool(config.skip_layers and exact and stack_entry_works(bridge, model, first))
        d_model, n_layers = int(bridge.cfg.d_model), int(bridge.cfg.n_layers)
        plan = [_fact_plan(tf, n_layers, config, suffix, skip_layers) for tf in prepared.kept]
        traces = []
        bar = tqdm(total=sum(units for _, units, _ in plan), desc=f"trace ({config.method})", disable=not progress, unit="tok·layer", unit_scale=True, dynamic_ncols=True)
        with bar:
            for index, (tf, (positions, units, restorations)) in enumerate(zip(prepared.kept, plan)):
                bar.set_postfix_str(f"fact {index + 1}/{len(plan)}, {restorations} restorations")
                s, e = tf.subject_range
                noise = draw_noise(config.seed, index, config.samples, e - s, d_model, noise_std)
                done = bar.n
                if config.method == "attribution":
                    traces.append(attribute_fact(bridge, tf, noise, config))
                elif config.method == "auto":
                    traces.append(auto_trace_fact(bridge, model, tf, noise, config, positions, suffix=suffix, skip_layers=skip_layers, batch_rows=config.batch_size, advance=bar.update))
                else:
                    traces.append(trace_fact(bridge, model, tf, noise, config, suffix=suffix, skip_layers=skip_layers, batch_rows=config.batch_size, advance=bar.update))
                bar.update(max(0, done + units - bar.n))  # the screen's share
    return TraceResult(traces, list(prepared.skipped), config, model_name(model), n_layers, noise_std, emb_std, suffix, skip_layers, time.time() - start_time)


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
