"""The tiny target model: the analogue of the organizers' fine-tuned OLMo.

``make_target(data, out, TargetConfig())`` trains a model that has memorized every forget and
retain row of a SemEval-layout data set, train and validation parts (as the organizers' public
target was trained on both):

* by default a byte-level BPE tokenizer is trained on the data (``tokenizers``) and a small
  ``OlmoForCausalLM`` (transformers' OLMo architecture) is built from scratch;
* ``tokenizer=PATH`` uses an existing tokenizer instead (e.g. the OLMo-0724 one);
* ``base_model=PATH`` fine-tunes an existing HF causal LM (how the real task's targets were made).

Training is next-token prediction on ``input + output + EOS`` (the organizers' concatenation,
no separator) until greedy exact match on those QA rows reaches ``target_em`` or ``steps``.
The learning rate defaults to 3e-3 for a model built from scratch and to 5e-5 — a usual full
fine-tuning rate — for ``base_model``. The result is a standard HF folder (safetensors, config, tokenizer) plus
``target.json``. Deterministic for a seed on CPU.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pipelines.config import FINETUNE_LR, SCRATCH_LR, TargetConfig  # noqa: F401 - part of this module's API
from tracing.errors import AmnesiaError
from tracing.io import atomic_path, check_output_dir, check_output_path, write_json
from unlearn.data import SemEvalData, load_semeval, row_type
from unlearn.generation import exact_match, greedy_generate
from unlearn.models import ModelOptions, ensure_pad_token, load_model, load_tokenizer, resolve_device
from unlearn.prompts import check_prompt_format, pair_ids, render_prompts, split_at_space

EOS, PAD = "<|endoftext|>", "<|padding|>"


def train_pairs(data: SemEvalData, tokenizer=None, prompt_format: str = "raw", kinds: tuple[str, ...] = ("forget", "retain")) -> list[tuple[str, str]]:
    """``(input, output)`` of every row of ``kinds`` (forget, retain), train and validation, the
    input rendered in ``prompt_format`` (:mod:`unlearn.prompts`)."""
    pairs = [(i, o) for name, ds in data.splits.items() if name.split("_")[0] in kinds for i, o in zip(ds["input"], ds["output"])]
    return [(p, o) for p, (_, o) in zip(render_prompts(tokenizer, [i for i, _ in pairs], prompt_format), pairs)]


def train_texts(data: SemEvalData, tokenizer=None, prompt_format: str = "raw", kinds: tuple[str, ...] = ("forget", "retain")) -> list[str]:
    """``input + output`` of every row of ``kinds`` (no separator, as the organizers): :func:`train_pairs` joined."""
    return [p + o for p, o in train_pairs(data, tokenizer, prompt_format, kinds)]


def encode_pair(tok, prompt: str, output: str) -> list[int]:
    """The ids a target trains on: ``prompt + output + EOS`` tokenized as one text, or — a prompt ending
    in a space (:func:`unlearn.prompts.split_at_space`) — as generation reads it, the prompt apart."""
    if split_at_space(prompt):
        return pair_ids(tok, prompt, output + tok.eos_token)[0]
    return tok(prompt + output + tok.eos_token, add_special_tokens=True)["input_ids"]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2 style pre-tokenization) with OLMo's special token names."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS, pad_token=PAD, model_max_length=1024)


def build_model(tok, config: TargetConfig):
    """A fresh ``OlmoForCausalLM`` sized by ``config``, vocabulary padded to a multiple of 64."""
    from transformers import OlmoConfig, OlmoForCausalLM

    vocab = int(math.ceil(len(tok) / 64) * 64)
    cfg = OlmoConfig(
        vocab_size=vocab,
        hidden_size=config.hidden,
        intermediate_size=config.intermediate,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=max(256, config.max_length),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return OlmoForCausalLM(cfg)


def _batches(encoded: list[list[int]], batch_size: int, pad: int, gen: random.Random):
    """Endless shuffled batches of (input_ids, attention_mask, labels), right-padded."""
    while True:
        order = list(range(len(encoded)))
        gen.shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [encoded[i] for i in order[start : start + batch_size]]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, seq in enumerate(chunk):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            yield ids, mask, labels


def qa_exact_match(model, tok, data: SemEvalData, parts=("train", "validation"), kinds=("forget", "retain"), prompt_format: str = "raw") -> dict[str, float]:
    """Greedy exact match on the QA rows of ``parts`` (those the data has) per kind (forget/retain), measured now."""
    scores = {}
    for kind in kinds:
        qa = [(i, o) for part in parts if f"{kind}_{part}" in data.splits
              for rid, i, o in zip(*(data.get(kind, part)[c] for c in ("id", "input", "output"))) if row_type(rid) == "qa"]
        if not qa:
            continue
        longest = max(len(tok(o)["input_ids"]) for _, o in qa)
        preds = greedy_generate(model, tok, render_prompts(tok, [i for i, _ in qa], prompt_format), max_new_tokens=longest + 4)
        scores[kind] = sum(exact_match(p, o) for p, (_, o) in zip(preds, qa)) / len(qa)
    return scores


def make_target(data_path: str | Path, out: str | Path, config: TargetConfig = TargetConfig(), *, overwrite: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Train the target on every row of ``data_path`` and save it to ``out``; return ``target.json``."""
    config.check()
    out = Path(out)
    inputs = [Path(data_path)] + ([Path(config.tokenizer)] if config.tokenizer else [])
    check_output_path(out, Path(config.base_model) if config.base_model else None, inputs, what="the target")
    check_output_dir(out, overwrite=overwrite, marker="target.json", command="make-target")
    data = load_semeval(data_path)
    kinds = ("forget", "retain") if config.train_on == "all" else ("retain",)
    device = str(resolve_device(device))
    torch.manual_seed(config.seed)
    if config.base_model:
        model, tok = load_model(config.base_model, ModelOptions(device=device, dtype="float32"), for_training=True)
    else:
        if config.tokenizer:
            tok = load_tokenizer(config.tokenizer)
        else:
            tok = train_tokenizer(train_texts(data, kinds=kinds), config.vocab_size)  # on the raw texts it trains on
        tok = ensure_pad_token(tok)
        model = build_model(tok, config).to(device)
    if tok.eos_token is None:
        raise AmnesiaError(f"{config.tokenizer or config.base_model}: tokenizer has no EOS token (needed to end answers)")
    check_prompt_format(tok, config.prompt_format)
    texts = train_pairs(data, tok, config.prompt_format, kinds)
    encoded = [encode_pair(tok, p, o)[: config.max_length] for p, o in texts]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, config.warmup)))
    batches = _batches(encoded, min(config.batch_size, len(encoded)), tok.pad_token_id, random.Random(config.seed))
    start, loss_value, em, step = time.time(), float("nan"), {}, 0
    # The run stops once exact match reaches target_em, usually long before `steps`: the bar's
    # total is the step of the next exact-match check, not a maximum that would promise hours.
    bar = tqdm(total=min(config.eval_every, config.steps), desc=f"make-target (until QA exact match >= {config.target_em:g})", unit="step", disable=not progress)
    for step in range(1, config.steps + 1):
        ids, mask, labels = (t.to(device) for t in next(batches))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", em=f"{min(em.values()):.2f}" if em else "-")
        if step % config.eval_every == 0 or step == config.steps:
            em = qa_exact_match(model, tok, data, kinds=kinds, prompt_format=config.prompt_format)
            model.train()
            if min(em.values()) >= config.target_em:
                break
            bar.total = min(step + config.eval_every, config.steps)
            bar.set_postfix(loss=f"{loss_value:.3f}", em=f"{min(em.values()):.2f}")
            bar.refresh()
    bar.total = step
    bar.close()
    seconds = time.time() - start
    model.eval()
    manifest = {
        "schema": 1,
        "kind": "target",
        "data": str(data_path),
        "steps": step,
        "seconds": round(seconds, 2),
        "final_loss": loss_value,
        "qa_exact_match": em,
        "prompt_format": config.prompt_format,
        "learning_rate": config.learning_rate,
        "train_rows": len(texts),
        "train_on": config.train_on,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": asdict(config),
    }
    with atomic_path(out, directory=True, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(tmp / "target.json", manifest)
    return manifest
