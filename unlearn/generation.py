"""Greedy generation in batches that matches one-row-at-a-time generation, and exact match.

:func:`generate` is what the evaluation uses; :func:`greedy_generate` is the short form the other
stages call. Prompts are tokenized as the organizers' script does (``tokenizer(prompt)``), sorted
by length (longest batch first, so a batch too big for memory fails at once), left-padded with
the matching attention mask (transformers derives the position ids from it), decoded greedily
with the KV cache until EOS or ``max_new_tokens`` and cut at the first EOS. Results come back in
the caller's order. ``batch_size=None`` picks the rows per batch from a memory budget
(:mod:`unlearn.batching`). A row whose prompt leaves fewer than ``max_new_tokens`` positions in
the model's context (``max_position_embeddings``) stops at the last one (``GenerationResult.capped``):
past it a model with learned positions fails and one with rotary positions runs where it never
trained. A batch runs to the smallest budget of its rows; a row that reaches it without EOS
while its own is larger is generated again alone (listed in ``reruns``).

Identical to one row at a time: in fp32 a batched row's logits differ from the same row's
logits alone only in the last bits (at most 7.6e-6 on the fixture model), because the
matrix-multiply library runs another kernel for one row (a matrix-vector product at every
decoding step and for the last position's logits) than for a batch, and padding changes the
order in which attention adds up. A greedy choice can only change where the two best logits are
closer than that. With ``tie_margin`` set, every decoding step's gap between the best and the
second-best logit is tracked per row, and a row whose smallest gap falls below ``tie_margin``
is generated again alone, the plain way; ``GenerationResult.reruns`` lists those rows. So the
texts are the one-row texts whenever the batched logits are within ``tie_margin / 2`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .batching import auto_rows, default_max_rows, generation_row_bytes, memory_budget, model_dims, plan_batches


def exact_match(prediction: str, answer: str) -> bool:
    """The organizers' knowledge test: equal after ``strip()`` and ``lower()``."""
    return prediction.strip().lower() == answer.strip().lower()


def clean_up_spaces(text: str) -> str:
    """transformers 4.x ``clean_up_tokenization``, which the organizers' script applied when decoding.

    transformers 5 no longer applies it to BPE tokenizers, but the official scores were computed
    with it (``batch_decode(..., clean_up_tokenization_spaces=True)`` under transformers 4).
    """
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


@dataclass(frozen=True)
class GenerationOptions:
    """How :func:`generate` decodes (see the module docstring for ``tie_margin``)."""

    max_new_tokens: int = 256
    batch_size: int | None = None
    clean_up_spaces: bool = False
    add_special_tokens: bool = True
    tie_margin: float | None = None
    max_rows: int | None = None
    progress: bool = False
    desc: str = "generate"


@dataclass
class GenerationResult:
    """Texts in input order, plus how they were made."""

    texts: list[str]
    new_tokens: list[int]
    reruns: list[int] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    min_margin: float | None = None
    #: rows whose budget the model's context cut below ``max_new_tokens`` (they stop at its last position)
    capped: list[int] = field(default_factory=list)


class _MarginTracker:
    """A logits processor that returns the scores unchanged and records each row's smallest top-2 gap.

    Rows that already produced an EOS no longer count (their later tokens are thrown away).
    """

    def __init__(self, batch: int, prompt_width: int, eos: list[int], device):
        self.prompt_width = prompt_width
        self.eos = torch.tensor(eos or [-1], device=device)
        self.min_margin = torch.full((batch,), float("inf"), device=device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = scores.float().topk(2, dim=-1).values
        margin = top[:, 0] - top[:, 1]
        done = torch.isin(input_ids[:, self.prompt_width :], self.eos).any(dim=-1)
        margin = margin.masked_fill(done, float("inf"))
        self.min_margin = torch.minimum(self.min_margin, margin)
        return scores


def eos_ids(model, tokenizer) -> list[int]:
    """The ids that end a generation: the model's generation config, else the tokenizer's EOS."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _cut(tokens: list[int], eos: list[int]) -> list[int]:
    """Tokens up to and including the first EOS (what one-row generation returns)."""
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def decode(tokenizer, tokens: Sequence[int], cleanup: bool = False) -> str:
    """Decode skipping special tokens; ``cleanup`` applies :func:`clean_up_spaces` (as the organizers)."""
    text = tokenizer.decode(list(tokens), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return clean_up_spaces(text) if cleanup else text


def _generate_batch(model, ids: list[list[int]], pad: int, eos: list[int], max_new_tokens: int, track: bool):
    """Left-padded greedy generation of one batch: (new tokens per row, min top-2 gap per row or None)."""
    device = next(model.parameters()).device
    width = max(len(s) for s in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    kwargs = {}
    tracker = None
    if track:
        from transformers import LogitsProcessorList

        tracker = _MarginTracker(len(ids), width, eos, device)
        kwargs["logits_processor"] = LogitsProcessorList([tracker])
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=pad,
        eos_token_id=eos or None,
        **kwargs,
    )
    new = [_cut(out[row, width:].tolist(), eos) for row in range(len(ids))]
    margins = tracker.min_margin.tolist() if tracker is not None else None
    return new, margins


def auto_batch_size(model, max_new_tokens: int, max_rows: int | None = None):
    """A function: longest prompt (tokens) → rows per generation batch that fit the memory budget."""
    device = next(model.parameters()).device
    budget, dims, cap = memory_budget(device), model_dims(model), max_rows or default_max_rows(device)
    return lambda width: auto_rows(budget, generation_row_bytes(dims, width + max_new_tokens), cap)


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], options: GenerationOptions = GenerationOptions()) -> GenerationResult:
    """Greedy continuations of raw-text ``prompts`` in input order (see the module docstring)."""
    if not prompts:
        return GenerationResult([], [])
    encoded = [tokenizer(p, add_special_tokens=options.add_special_tokens)["input_ids"] for p in prompts]
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    lengths = [len(e) for e in encoded]
    # a row whose prompt leaves fewer than max_new_tokens positions in the model's context stops at its
    # last position; a batch runs to the smallest such budget of its rows (its longest prompt's), and a
    # row that reached it without EOS while its own budget is larger is generated again alone
    from .models import context_length

    ctx = context_length(model)
    caps = [options.max_new_tokens if ctx is None else max(0, min(options.max_new_tokens, ctx - n)) for n in lengths]
    capped = [i for i, c in enumerate(caps) if c < options.max_new_tokens]
    rows = [i for i, c in enumerate(caps) if c > 0]  # a prompt that fills the context gets no token
    sizes = (lambda width: options.batch_size) if options.batch_size else auto_batch_size(model, options.max_new_tokens, options.max_rows)
    batches = [[rows[j] for j in b] for b in plan_batches([lengths[i] for i in rows], sizes)]
    new_tokens: list[list[int]] = [[] for _ in prompts]
    reruns: list[int] = []
    smallest = float("inf")
    track = bool(options.tie_margin and options.tie_margin > 0)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc=options.desc, unit="row", disable=not options.progress, leave=False)
    try:
        bar.update(len(prompts) - len(rows))  # prompts that fill the context: nothing to generate
        for batch in batches:
            # a batch of one row is the one-row generation itself: nothing to check
            budget = min(caps[i] for i in batch)
            new, margins = _generate_batch(model, [encoded[i] for i in batch], pad, eos, budget, track and len(batch) > 1)
            for row, i in enumerate(batch):
                new_tokens[i] = new[row]
                if margins is not None:
                    smallest = min(smallest, margins[row])
                    if margins[row] < options.tie_margin:
                        reruns.append(i)
                if len(new[row]) == budget < caps[i] and i not in reruns:  # cut by a neighbour's context, not its own
                    reruns.append(i)
            bar.update(len(batch))
        for i in reruns:  # near-ties and rows cut short: the plain one-row generation decides
            new_tokens[i] = _generate_batch(model, [encoded[i]], pad, eos, caps[i], False)[0][0]
    finally:
        bar.close()
        model.train(was_training)
    return GenerationResult(
        texts=[decode(tokenizer, toks, options.clean_up_spaces) for toks in new_tokens],
        new_tokens=[len(t) for t in new_tokens],
        reruns=sorted(reruns),
        batch_sizes=[len(b) for b in batches],
        min_margin=smallest if smallest != float("inf") else None,
        capped=capped,
    )


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int | None = 32,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy continuations of ``prompts`` (raw text, no chat template), in input order.

    ``batch_size=None`` picks it automatically. No near-tie reruns; see :func:`generate`.
    """
    options = GenerationOptions(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress, desc=desc)
    return generate(model, tokenizer, prompts, options).texts
