"""Batched negative log-likelihood, identical to one row at a time.

* :func:`completion_nll` — per row, the mean token NLL of ``prompt + completion`` with the loss on
  the completion only, exactly as the organizers' script records it: ``prompt + completion`` is
  tokenized as one string (no separator), and the first ``len(tokenizer(prompt))`` tokens are
  masked (``-100``), even where the tokenizer merges a token across the boundary.
* :func:`document_nll` — per document, the mean token NLL of the whole document (the loss the
  membership-inference test ranks).
* :func:`sequence_token_nll` — per row, the NLL of every scored token (what Min-K% Prob ranks),
  from the same batches as :func:`sequence_nll`; :func:`sequence_token_stats` adds whether each
  token is the greedy choice and the moments Min-K%++ normalises by.

All run right-padded batches (positions stay 0..L-1) under
:func:`unlearn.batching.row_exact_attention`, and take each row's loss with the model's own
``loss_function`` on that row's logits, so every number equals ``model(ids, labels=labels).loss``
for the row alone. Rows shorter than :func:`unlearn.batching.small_rows` tokens run alone (the
matrix-multiply library uses other kernels for so few rows; where that ends is measured per machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..batching import auto_rows, default_max_rows, forward_row_bytes, memory_budget, model_dims, plan_batches, row_exact_attention, small_rows
from ..prompts import pair_ids, split_at_space

IGNORE = -100


@dataclass(frozen=True)
class NLLOptions:
    """Batching of the NLL passes: ``batch_size`` None = automatic (memory budget / token count)."""

    batch_size: int | None = None
    max_rows: int | None = None
    add_special_tokens: bool = True
    progress: bool = False
    desc: str = "nll"


def completion_labels(tokenizer, prompt: str, completion: str, add_special_tokens: bool = True, eos: bool = False) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of ``prompt + completion`` with the prompt's tokens masked (the official
    recipe); ``eos``: the tokenizer's EOS appended and scored, unless the text already ends with it
    (TOFU's and OpenUnlearning's data pipeline). A prompt that ends in a space is tokenized apart from
    its completion, as generation reads it (:func:`unlearn.prompts.split_at_space`)."""
    if split_at_space(prompt):
        ids, n_prompt = pair_ids(tokenizer, prompt, completion, add_special_tokens)
    else:
        ids = tokenizer(prompt + completion, add_special_tokens=add_special_tokens)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
    labels = [IGNORE] * min(n_prompt, len(ids)) + ids[n_prompt:]
    return with_eos(tokenizer, ids, labels) if eos else (ids, labels)


def with_eos(tokenizer, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """``ids`` and ``labels`` with the tokenizer's EOS appended (scored), unless ``ids`` already ends with it."""
    eos = tokenizer.eos_token_id
    if eos is None:
        from tracing.errors import AmnesiaError

        raise AmnesiaError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r}: has no EOS token to append to the scored answers (expected eos_token_id; or turn answer_eos off)")
    if ids and ids[-1] == eos:
        return ids, labels
    return ids + [eos], labels + [eos]


def membership_sequences(tokenizer, prompts: Sequence[str], completions: Sequence[str], tokens: str, eos: bool = False) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` of each ``prompt + completion`` as a membership test scores it: labels on
    the completion's tokens (``"answer"``, :func:`completion_labels`) or on every token (``"document"``);
    ``eos``: EOS appended and scored (:func:`with_eos`)."""
    if tokens == "answer":
        return [completion_labels(tokenizer, p, c, eos=eos) for p, c in zip(prompts, completions)]
    pairs = [(ids, list(ids)) for ids in (tokenizer(p + c)["input_ids"] for p, c in zip(prompts, completions))]
    return [with_eos(tokenizer, ids, labels) for ids, labels in pairs] if eos else pairs


def _row_loss(model, logits: torch.Tensor, labels: list[int]) -> float:
    target = torch.tensor([labels], dtype=torch.long, device=logits.device)
    return float(model.loss_function(logits=logits, labels=target, vocab_size=model.config.vocab_size))


def auto_batch_size(model, max_rows: int | None = None):
    """A function: row width (tokens) → rows per forward pass that fit the memory budget (logits dominate)."""
    device = next(model.parameters()).device
    budget, dims, cap = memory_budget(device), model_dims(model), max_rows or default_max_rows(device)
    return lambda width: auto_rows(budget, forward_row_bytes(dims, width), cap)


def _row_token_nll(model, logits: torch.Tensor, labels: list[int]) -> list[float]:
    """Per scored token, in order: the NLL of ``labels[t + 1]`` given the logits at ``t`` (in float32, as the loss)."""
    target = torch.tensor(labels[1:], dtype=torch.long, device=logits.device)
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), target, reduction="none", ignore_index=IGNORE)
    return nll[target != IGNORE].tolist()


@torch.no_grad()
def _per_row(model, sequences: Sequence[tuple[list[int], list[int]]], options: NLLOptions, row_value: Callable, empty: Callable[[], Any]) -> list:
    """``row_value(model, logits, labels)`` of each ``(input_ids, labels)`` pair, in input order.

    The one batching loop of this module: length-planned right-padded batches under
    :func:`row_exact_attention`, rows shorter than :func:`small_rows` alone; each row's value is
    computed on that row's own logits (``[1, length, vocab]``). A row without tokens gets ``empty()``.
    """
    if not sequences:
        return []
    device = next(model.parameters()).device
    lengths = [len(ids) for ids, _ in sequences]
    few = small_rows(model)
    alone = [i for i, n in enumerate(lengths) if n < few]
    rest = [i for i, n in enumerate(lengths) if n >= few]
    sizes = (lambda w: options.batch_size) if options.batch_size else auto_batch_size(model, options.max_rows)
    batches = [[rest[j] for j in b] for b in plan_batches([lengths[i] for i in rest], sizes)]
    batches += [[i] for i in alone]
    out = [empty() for _ in sequences]
    pad = getattr(model.config, "pad_token_id", None)
    pad = 0 if pad is None else (pad[0] if isinstance(pad, (list, tuple)) else pad)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(sequences), desc=options.desc, unit="row", disable=not options.progress, leave=False)
    try:
        with row_exact_attention(model):
            for batch in batches:
                if len(batch) == 1:  # exactly the one-row call
                    ids, labels = sequences[batch[0]]
                    if not ids:
                        bar.update(1)
                        continue
                    x = torch.tensor([ids], dtype=torch.long, device=device)
                    logits = model(input_ids=x).logits
                    out[batch[0]] = row_value(model, logits, labels)
                    bar.update(1)
                    continue
                width = max(lengths[i] for i in batch)
                x = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    x[row, : lengths[i]] = torch.tensor(sequences[i][0], dtype=torch.long)
                    mask[row, : lengths[i]] = 1
                logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
                for row, i in enumerate(batch):
                    out[i] = row_value(model, logits[row : row + 1, : lengths[i]], sequences[i][1])
                bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return out


def sequence_nll(model, sequences: Sequence[tuple[list[int], list[int]]], options: NLLOptions = NLLOptions()) -> list[float]:
    """Mean NLL of each ``(input_ids, labels)`` pair (labels ``-100`` are not scored), in input order.

    A row with no scored token gets NaN, as ``model(ids, labels=labels).loss`` would.
    """
    return _per_row(model, sequences, options, _row_loss, lambda: math.nan)


def sequence_token_nll(model, sequences: Sequence[tuple[list[int], list[int]]], options: NLLOptions = NLLOptions()) -> list[list[float]]:
    """Per ``(input_ids, labels)`` pair, the NLL of each scored token (labels not ``-100``), in order.

    The same batches and logits as :func:`sequence_nll` (so equal to one row at a time); the
    values are ``cross_entropy(logits[t], labels[t + 1])`` in float32 — what Min-K% Prob ranks.
    Their mean equals :func:`sequence_nll`'s value up to the order of the float additions. A row
    with no scored token gets ``[]``.
    """
    return _per_row(model, sequences, options, _row_token_nll, list)


@dataclass(frozen=True)
class TokenStats:
    """Per scored token of one row, in order: its NLL (as :func:`sequence_token_nll`), whether it is
    the model's greedy choice there (``hit``: argmax of the logits = the label, teacher-forced), and
    the mean ``mu = Σ_v p_v log p_v`` and variance ``sigma = Σ_v p_v (log p_v)² − mu²`` of the
    log-probability under the model's own next-token distribution (Min-K%++'s normalisers; in
    float64, where OpenUnlearning's float32 differs by float noise)."""

    nll: list[float]
    hit: list[bool]
    mu: list[float]
    sigma: list[float]

    def drop_last(self) -> "TokenStats":
        """The same without the last scored token (an appended EOS that a metric does not read)."""
        return TokenStats(self.nll[:-1], self.hit[:-1], self.mu[:-1], self.sigma[:-1])


def _row_token_stats(model, logits: torch.Tensor, labels: list[int]) -> TokenStats:
    target = torch.tensor(labels[1:], dtype=torch.long, device=logits.device)
    keep = target != IGNORE
    scored = logits[0, :-1][keep]
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), target, reduction="none", ignore_index=IGNORE)[keep]
    wide = torch.log_softmax(scored.double(), dim=-1)  # E[x²] − mu² cancels badly in float32 for a flat distribution
    p = wide.exp()
    mu = (p * wide).sum(-1)
    sigma = (p * wide.square()).sum(-1) - mu.square()
    return TokenStats(nll.tolist(), (scored.argmax(-1) == target[keep]).tolist(), mu.tolist(), sigma.tolist())  # greedy choice: the logits' argmax


def sequence_token_stats(model, sequences: Sequence[tuple[list[int], list[int]]], options: NLLOptions = NLLOptions()) -> list[TokenStats]:
    """Per ``(input_ids, labels)`` pair, :class:`TokenStats` of each scored token: the same batches and
    logits as :func:`sequence_token_nll` (equal to one row at a time; its ``nll`` are those values)."""
    return _per_row(model, sequences, options, _row_token_stats, lambda: TokenStats([], [], [], []))


def sequence_grad_norm(model, sequences: Sequence[tuple[list[int], list[int]]], *, p: float = 2.0, drop_last: bool = False,
                       progress: bool = False, desc: str = "grad norm") -> list[float]:
    """Per ``(input_ids, labels)`` pair, one row at a time: the gradient of the row's mean scored-token
    NLL (``drop_last``: without its last scored token) with respect to every parameter that takes
    one, and the mean over those parameter tensors of each gradient's ``p``-norm — the gradnorm
    membership attack (Wang et al. 2024; OpenUnlearning ``GradNormAttack``, whose model is put in
    train mode: here it stays in eval mode, the same for a model without dropout). The model's
    gradients are cleared before and after; a row with no scored token gets NaN."""
    if p not in (1, 2, math.inf):
        from tracing.errors import AmnesiaError

        raise AmnesiaError(f"gradnorm p {p}: expected 1, 2 or inf")
    device = next(model.parameters()).device
    params = [q for q in model.parameters() if q.requires_grad]
    out = []
    was_training = model.training
    model.eval()
    try:
        for ids, labels in tqdm(sequences, desc=desc, unit="row", disable=not progress, leave=False):
            model.zero_grad(set_to_none=True)
            scored = [t for t in range(1, len(labels)) if labels[t] != IGNORE]
            if drop_last:
                scored = scored[:-1]
            if not scored:
                out.append(math.nan)
                continue
            logits = model(input_ids=torch.tensor([ids], dtype=torch.long, device=device)).logits[0].float()
            where = torch.tensor(scored, device=device)
            logp = torch.log_softmax(logits[where - 1], dim=-1).gather(1, torch.tensor([labels[t] for t in scored], device=device)[:, None])
            (-logp.mean()).backward()
            norms = [q.grad.detach().float().norm(p) for q in params if q.grad is not None]
            out.append(float(torch.stack(norms).mean()))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return out


def completion_nll(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], options: NLLOptions = NLLOptions()) -> list[float]:
    """Per row, mean NLL of ``completion`` after ``prompt`` (see the module docstring)."""
    pairs = [completion_labels(tokenizer, p, c, options.add_special_tokens) for p, c in zip(prompts, completions)]
    return sequence_nll(model, pairs, options)


def document_nll(model, tokenizer, documents: Sequence[str], options: NLLOptions = NLLOptions()) -> list[float]:
    """Per document, mean NLL of all its tokens (labels = input ids, as the official MIA attack)."""
    pairs = []
    for doc in documents:
        ids = tokenizer(doc, add_special_tokens=options.add_special_tokens)["input_ids"]
        pairs.append((ids, list(ids)))
    return sequence_nll(model, pairs, options)
