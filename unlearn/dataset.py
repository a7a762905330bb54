"""Tokenized forget/retain examples and the paired batches the unlearning trainer reads.

Each example is the prompt (``input``) followed by the answer (``output``):

* the prompt is rendered in the run's one prompt format (:mod:`unlearn.prompts`): ``raw``
  joins ``input + output`` as they are, which is how the SemEval targets were fine-tuned and
  scored (no separator); ``chat`` wraps the input in the tokenizer's chat template;
* EOS is appended after the output (the target learned to stop there);
* labels are ``-100`` on every prompt token, so every loss is taken on output tokens only.
  With a fast tokenizer the boundary comes from character offsets of the joint tokenization
  (a token straddling prompt and output counts as output); otherwise from the prompt's length;
* rows longer than ``max_length`` tokens are cut on the right; one warning counts them
  (and the rows left with no output token, which are dropped).

:class:`PairedDataset` pairs every forget row with a retain row (or ``retain_ratio`` of them).
An epoch is one pass over the forget rows in a seeded shuffled order (``joint``), or the next
stretch of the ``sequential`` schedule's chunk-by-chunk passes; retain rows are consumed in
their own seeded order, continuing across epochs and starting over when exhausted (so a short
retain set cycles and a long one is seen in full over several epochs). An item is a pure function of its key
``epoch·n_forget + position`` — :class:`EpochSampler` yields those keys — so a resumed run sees
exactly the batches an uninterrupted one would.

``group_by_length`` (joint schedule) cuts the padding: within each window of ``group_size`` keys
(the trainer uses one optimizer step: batch × accumulation × processes), the window's forget rows
and its retain rows are each sorted by length and paired rank by rank, cut into batches of
``batch_size``, and the full batches are put in a seeded shuffled order. A window holds exactly
the rows it holds without grouping — every optimizer step sees the same rows — only which
micro-batch a row lands in changes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np
import torch

from tracing.errors import AmnesiaError

from .data import row_kind
from .prompts import pair_ids, render_prompts, split_at_space

IGNORE = -100


@dataclass
class Encoded:
    """Token ids and output-only labels of one split, with what truncation did to it."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    ids: list[str]
    rows: int
    truncated: int
    dropped: int
    alternates: "Encoded | None" = None  # row i's alternate answer (a method with ``alternates``: IdkDPO's refusal), aligned by row

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, keep: Sequence[int]) -> "Encoded":
        """Rows ``keep`` (with their alternates)."""
        alt = self.alternates.subset(keep) if self.alternates is not None else None
        return Encoded([self.input_ids[i] for i in keep], [self.labels[i] for i in keep], [self.ids[i] for i in keep], len(keep), 0, 0, alt)

    def with_alternates(self, alternates: "Encoded") -> "Encoded":
        """These rows with ``alternates`` aligned to them by row id (every row needs one)."""
        where = {rid: i for i, rid in enumerate(alternates.ids)}
        missing = [rid for rid in self.ids if rid not in where]
        if missing:
            raise AmnesiaError(f"alternate answers: no encodable alternate for {len(missing)} row(s), e.g. {missing[0]!r} (too long for max_length?)")
        return Encoded(self.input_ids, self.labels, self.ids, self.rows, self.truncated, self.dropped, alternates.subset([where[rid] for rid in self.ids]))


def _encode_one(tokenizer, prompt_text: str, output: str, add_eos: bool, label_prompt: bool = False, label_eos: bool = True) -> tuple[list[int], list[int]]:
    eos = tokenizer.eos_token if add_eos and tokenizer.eos_token else ""
    text = prompt_text + output + eos
    # Tokenized with the tokenizer's own special tokens, as every stage does (render_prompts leaves BOS to it).
    if split_at_space(prompt_text):
        ids, n_prompt = pair_ids(tokenizer, prompt_text, output + eos)
        labels = [IGNORE] * n_prompt + ids[n_prompt:]
    elif getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, return_offsets_mapping=True)
        ids = enc["input_ids"]
        boundary = len(prompt_text)
        # Special tokens the tokenizer adds (BOS) have empty offsets and stay prompt.
        labels = [tok if end > boundary else IGNORE for tok, (_, end) in zip(ids, enc["offset_mapping"])]
    else:
        ids = tokenizer(text)["input_ids"]
        n_prompt = len(tokenizer(prompt_text)["input_ids"])
        labels = [IGNORE] * n_prompt + ids[n_prompt:]
    if label_prompt:
        labels = list(ids)
    if eos and not label_eos and labels and ids[-1] == tokenizer.eos_token_id:
        labels[-1] = IGNORE
    return ids, labels


def encode_rows(
    tokenizer,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    max_length: int = 512,
    prompt_format: str = "raw",
    add_eos: bool = True,
    label_prompt: bool | Sequence[bool] = False,
    label_eos: bool = True,
    name: str = "rows",
) -> Encoded:
    """Tokenize ``input + output`` pairs with output-only labels; truncate to ``max_length``.

    ``label_prompt`` labels the prompt's tokens too (the loss covers the whole text); one bool
    per row decides it row by row;
    ``label_eos=False`` leaves the appended EOS unlabelled (it stays in the input).
    """
    if max_length < 2:
        raise AmnesiaError(f"max_length {max_length}: expected at least 2 tokens")
    prompts = render_prompts(tokenizer, inputs, prompt_format)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(inputs))]
    out_ids, out_labels, kept_ids = [], [], []
    truncated = dropped = 0
    whole = [label_prompt] * len(ids) if isinstance(label_prompt, bool) else list(label_prompt)
    if len(whole) != len(ids):
        raise AmnesiaError(f"{name}: label_prompt has {len(whole)} flags for {len(ids)} rows")
    for rid, prompt, output, full in zip(ids, prompts, outputs, whole):
        seq, labels = _encode_one(tokenizer, prompt, output, add_eos, full, label_eos)
        if len(seq) > max_length:
            truncated += 1
            seq, labels = seq[:max_length], labels[:max_length]
        # labels[0] is never predicted (no token before it), so it does not count as output.
        if all(l == IGNORE for l in labels[1:]):
            dropped += 1
            continue
        out_ids.append(seq)
        out_labels.append(labels)
        kept_ids.append(rid)
    if truncated:
        warnings.warn(
            f"{name}: {truncated} of {len(ids)} rows are longer than max_length {max_length} tokens and were truncated"
            + (f"; {dropped} rows have no output token left and are skipped" if dropped else ""),
            UserWarning,
            stacklevel=2,
        )
    elif dropped:
        warnings.warn(f"{name}: {dropped} of {len(ids)} rows have an empty output and are skipped", UserWarning, stacklevel=2)
    if not out_ids:
        raise AmnesiaError(f"{name}: no row has an output token within max_length {max_length} (raise --max-length)")
    return Encoded(out_ids, out_labels, kept_ids, len(ids), truncated, dropped)


def encode_split(tokenizer, dataset, **kwargs) -> Encoded:
    """:func:`encode_rows` over a SemEval-layout ``datasets.Dataset`` (columns id, input, output)."""
    return encode_rows(tokenizer, dataset["input"], dataset["output"], ids=dataset["id"], **kwargs)


# --------------------------------------------------------------------------- pairing


@lru_cache(maxsize=64)
def _permutation(seed: int, stream: int, cycle: int, n: int) -> tuple[int, ...]:
    rng = np.random.default_rng([seed, stream, cycle])
    return tuple(int(i) for i in rng.permutation(n))


SCHEDULES = ("joint", "sequential")


@lru_cache(maxsize=8)
def spread_quantiles(n: int, seed: int, kinds: tuple[str, ...] | None = None) -> tuple[float, ...]:
    """``n`` quantiles in a seeded order: row ``r`` aims at the ``r``-th of them.

    Spread evenly, the forget rows' targets have the distribution of the reference NLLs
    themselves, so the forgotten rows end distributed like never-seen text (calibrated forgetting,
    :mod:`unlearn.calibration`). The spread is even *within each kind of row* (``kinds[r]``, e.g.
    SemEval's sentence-completion documents and its questions; one kind when ``None``): the ``m``
    rows of a kind get ``(i + 0.5) / m`` for ``i < m`` in a seeded order. Membership inference
    reads the documents alone, so they must span the reference distribution themselves — a
    random share of one spread over all rows gave the demo's trained documents a median target
    between the 0.53 and the 0.69 quantile on four seeds (``docs/step-size.md``).
    """
    kinds = kinds if kinds is not None else ("",) * n
    out = [0.0] * n
    for k, kind in enumerate(sorted(set(kinds))):
        rows = [r for r in range(n) if kinds[r] == kind]
        order = _permutation(seed, 4, k, len(rows))
        for r, o in zip(rows, order):
            out[r] = (o + 0.5) / len(rows)
    return tuple(out)


def row_quantiles(encoded: "Encoded", seed: int) -> tuple[float, ...]:
    """The spread quantile of each row of ``encoded`` (:func:`spread_quantiles`, even within each :func:`row_kind`)."""
    return spread_quantiles(len(encoded), seed, tuple(row_kind(i) for i in encoded.ids))


class PairedDataset(torch.utils.data.Dataset):
    """Item ``key`` = a forget row and ``retain_ratio`` retain rows; ``key = epoch·n_forget + position``.

    ``len()`` is the forget count (one epoch). Retain rows follow one global shuffled stream,
    reshuffled each time it is used up. The forget order depends on ``schedule``:

    * ``joint`` (default): every epoch is a fresh shuffle of all forget rows;
    * ``sequential``: the forget rows, in data order, are cut into chunks of ``chunk_size``;
      the run trains ``passes`` shuffled passes over the first chunk, then over the second,
      and so on (the first-placed team's recipe). The keys of all ``passes`` epochs together
      cover that sequence once, so ``passes`` must equal the number of epochs.
    """

    def __init__(
        self,
        forget: Encoded,
        retain: Encoded | None,
        seed: int = 0,
        *,
        shuffle: bool = True,
        schedule: str = "joint",
        chunk_size: int = 32,
        passes: int = 1,
        retain_ratio: int = 1,
        group_size: int = 0,
        batch_size: int = 1,
    ):
        if schedule not in SCHEDULES:
            raise AmnesiaError(f"schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if chunk_size < 1 or passes < 1 or retain_ratio < 1 or batch_size < 1 or group_size < 0:
            raise AmnesiaError(f"chunk_size {chunk_size}, passes {passes}, retain_ratio {retain_ratio}, batch_size {batch_size}, "
                               f"group_size {group_size}: expected positive integers (group_size 0 = no length grouping)")
        if group_size and schedule != "joint":
            raise AmnesiaError(f"group_by_length works with the joint schedule only, not {schedule!r}")
        if group_size and group_size % batch_size:
            raise AmnesiaError(f"group_size {group_size}: expected a multiple of batch_size {batch_size}")
        self.group_size = group_size
        self.batch_size = batch_size
        self._windows: dict[tuple[int, int], list[tuple[int, list[int]]]] = {}
        self.forget = forget
        self.retain = retain
        self.seed = seed
        self.quantiles = row_quantiles(forget, seed)  # each forget row's spread target
        self.shuffle = shuffle
        self.schedule = schedule
        self.passes = passes
        self.retain_ratio = retain_ratio
        n = len(forget)
        self.chunks = [(start, min(chunk_size, n - start)) for start in range(0, n, chunk_size)]
        self._bounds = list(np.cumsum([0] + [passes * size for _, size in self.chunks]))

    def __len__(self) -> int:
        return len(self.forget)

    def forget_row(self, key: int) -> int:
        n_f = len(self.forget)
        if self.schedule == "joint":
            epoch, pos = divmod(int(key), n_f)
            return _permutation(self.seed, 0, epoch, n_f)[pos] if self.shuffle else pos
        key = int(key) % (self.passes * n_f)  # keys past the last pass start the sequence again
        chunk = int(np.searchsorted(self._bounds, key, side="right")) - 1
        start, size = self.chunks[chunk]
        repeat, pos = divmod(key - self._bounds[chunk], size)
        return start + (_permutation(self.seed, 2, chunk * self.passes + repeat, size)[pos] if self.shuffle else pos)

    def retain_rows(self, key: int) -> list[int]:
        if self.retain is None:
            return []
        n_r = len(self.retain)
        out = []
        for j in range(self.retain_ratio):
            cycle, pos = divmod(int(key) * self.retain_ratio + j, n_r)
            out.append(_permutation(self.seed, 1, cycle, n_r)[pos] if self.shuffle else pos)
        return out

    def rows(self, key: int) -> tuple[int, list[int]]:
        """``(forget index, retain indices)`` of item ``key``."""
        if not self.group_size:
            return self.forget_row(key), self.retain_rows(key)
        epoch, pos = divmod(int(key), len(self.forget))
        window, offset = divmod(pos, self.group_size)
        return self._grouped(epoch, window)[offset]

    def _grouped(self, epoch: int, window: int) -> list[tuple[int, list[int]]]:
        """The items of one grouping window, by position: same rows as ungrouped, length-sorted batches."""
        cached = self._windows.get((epoch, window))
        if cached is not None:
            return cached
        n = len(self.forget)
        keys = range(epoch * n + window * self.group_size, epoch * n + min((window + 1) * self.group_size, n))
        forget = sorted((self.forget_row(k) for k in keys), key=lambda f: -len(self.forget.input_ids[f]))  # stable: ties keep shuffle order
        retain = [r for k in keys for r in self.retain_rows(k)]
        if self.retain is not None:
            retain.sort(key=lambda r: -len(self.retain.input_ids[r]))
        ratio = self.retain_ratio if self.retain is not None else 0
        items = [(f, retain[q * ratio : (q + 1) * ratio]) for q, f in enumerate(forget)]
        full = len(items) // self.batch_size
        order = np.random.default_rng([self.seed, 3, epoch, window]).permutation(full) if self.shuffle else range(full)
        grouped = [item for b in order for item in items[b * self.batch_size : (b + 1) * self.batch_size]]
        grouped += items[full * self.batch_size :]  # a short last batch (end of the epoch) stays last
        if len(self._windows) >= 64:
            self._windows.clear()
        self._windows[(epoch, window)] = grouped
        return grouped

    def forget_quantile(self, row: int) -> float:
        """The quantile of never-seen text forget row ``row`` aims at when targets are spread
        (:func:`row_quantiles`: a seeded, even spread over (0, 1) within each kind of row, fixed for the run)."""
        return self.quantiles[row]

    def __getitem__(self, key: int) -> dict:
        f, rs = self.rows(key)
        item = {"epoch": int(key) // len(self.forget), "forget_input_ids": self.forget.input_ids[f], "forget_labels": self.forget.labels[f],
                "forget_quantile": self.forget_quantile(f)}
        if self.retain is not None:
            item["retain_input_ids"] = [self.retain.input_ids[r] for r in rs]
            item["retain_labels"] = [self.retain.labels[r] for r in rs]
        if self.forget.alternates is not None:
            item["alternate_input_ids"], item["alternate_labels"] = self.forget.alternates.input_ids[f], self.forget.alternates.labels[f]
        return item


class EpochSampler(torch.utils.data.Sampler):
    """Yields the keys ``epoch·n … epoch·n + n − 1`` of the epoch set with :meth:`set_epoch`."""

    def __init__(self, n: int):
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.n
        return iter(range(start, start + self.n))

    def __len__(self) -> int:
        return self.n


class PairedCollator:
    """Right-pads each half of a batch: ``{forget,retain,alternate}_{input_ids,attention_mask,labels}`` (+ ``epoch``)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def _pad(self, seqs: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        if "epoch" in items[0]:
            batch["epoch"] = torch.tensor([it["epoch"] for it in items], dtype=torch.long)
        if "forget_quantile" in items[0]:
            batch["forget_quantile"] = torch.tensor([it["forget_quantile"] for it in items], dtype=torch.float32)
        for half in ("forget", "retain", "alternate"):
            if f"{half}_input_ids" not in items[0]:
                continue
            if half != "retain":
                ids = [it[f"{half}_input_ids"] for it in items]
                labels = [it[f"{half}_labels"] for it in items]
            else:  # several retain rows per item with a retain ratio above 1
                ids = [seq for it in items for seq in it["retain_input_ids"]]
                labels = [seq for it in items for seq in it["retain_labels"]]
            batch[f"{half}_input_ids"] = self._pad(ids, self.pad)
            batch[f"{half}_labels"] = self._pad(labels, IGNORE)
            mask = torch.zeros_like(batch[f"{half}_input_ids"])
            for i, s in enumerate(ids):
                mask[i, : len(s)] = 1
            batch[f"{half}_attention_mask"] = mask
        return batch
