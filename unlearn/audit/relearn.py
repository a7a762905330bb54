"""Relearning attacks: a few fine-tuning steps on text the audit does not score.

Deeb & Roger 2024 and Łucki et al. 2024: fine-tuning an unlearned model for a few steps on part of
the forgotten facts — or on unrelated text — brings much of the rest back when the knowledge was
hidden rather than removed. :func:`relearn` is that attacker: full fine-tuning of every parameter
(AdamW, no weight decay, a constant rate), ``steps`` optimizer steps of ``batch_size`` rows drawn
in a seeded cycle, the loss the mean cross-entropy of the answer tokens (the prompt masked, an EOS
appended, as make-target trains). The audit checks that no scored row is among the rows it trains
on (:func:`overlap`).
"""

from __future__ import annotations

import random
from typing import Sequence

from tracing.errors import AmnesiaError


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = 512) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` of each rendered ``(prompt, answer)``, the prompt masked, EOS appended and labelled."""
    from ..eval.nll import completion_labels

    eos = tokenizer.eos_token or ""
    out = []
    for prompt, answer in pairs:
        ids, labels = completion_labels(tokenizer, prompt, answer + eos)
        out.append((ids[:max_length], labels[:max_length]))
    return out


def overlap(trained: Sequence[tuple[list[int], list[int]]], scored: Sequence[tuple[list[int], list[int]]]) -> int:
    """How many scored sequences (their labelled tokens) are also trained on: 0 for a clean split."""
    seen = {tuple(t for t in labels if t >= 0) for _, labels in trained}
    return sum(tuple(t for t in labels if t >= 0) in seen for _, labels in scored)


def relearn(model, tokenizer, pairs: Sequence[tuple[str, str]], *, steps: int, lr: float, batch_size: int = 4, seed: int = 0,
            max_length: int = 512) -> dict:
    """Fine-tune ``model`` in place on ``pairs`` (rendered prompt, answer); returns the losses and counts."""
    import torch

    from ..eval.nll import IGNORE

    if not pairs:
        raise AmnesiaError("relearning: no rows to train on")
    if steps < 1 or not lr > 0:
        raise AmnesiaError(f"relearning: steps {steps} and lr {lr}: expected a positive number of steps and a positive rate")
    encoded = encode_pairs(tokenizer, pairs, max_length)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = random.Random(seed)
    order: list[int] = []
    was_training = model.training
    model.train()
    for p in model.parameters():
        p.requires_grad_(p.is_floating_point())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    torch.manual_seed(seed)
    for _ in range(steps):
        batch = []
        while len(batch) < min(batch_size, len(encoded)):
            if not order:
                order = list(range(len(encoded)))
                generator.shuffle(order)
            batch.append(encoded[order.pop()])
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=device)
        labels = torch.tensor([l + [IGNORE] * (width - len(l)) for _, l in batch], device=device)
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
        out = model(input_ids=ids, attention_mask=mask)
        logits = out.logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    opt.zero_grad(set_to_none=True)
    model.train(was_training)
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "rows": len(encoded), "first_loss": losses[0], "last_loss": losses[-1]}
