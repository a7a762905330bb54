"""Train the tiny target model: a small OLMo that has memorized the forget + retain train rows.

By default trains a byte-level BPE tokenizer on the data and a 6-layer, 128-wide
OlmoForCausalLM from scratch until greedy exact match on the QA rows (train and validation:
the target learns every row, as the organizers' target did) reaches --target-em (or --steps). --tokenizer uses an existing tokenizer (e.g. the OLMo-0724 one);
--base-model fine-tunes an existing HF model instead. Writes a standard HF folder
(safetensors, config, tokenizer) and target.json.
"""

from __future__ import annotations

import argparse

from pipelines.config import TargetConfig

NAME = "make-target"
HELP = "train the tiny target model that memorizes the data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TargetConfig()
    p.add_argument("--data", required=True, help="SemEval-layout data folder (e.g. from make-world)")
    p.add_argument("--out", required=True, help="output model folder (must not exist unless --overwrite)")
    p.add_argument("--tokenizer", default=None, help="use this tokenizer (folder or Hub id) instead of training one")
    p.add_argument("--base-model", default=None, help="fine-tune this HF causal LM instead of building a fresh OLMo")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (initialisation and batch order)")
    p.add_argument("--layers", type=int, default=d.layers, help="transformer layers of the fresh model")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden size of the fresh model")
    p.add_argument("--heads", type=int, default=d.heads, help="attention heads of the fresh model")
    p.add_argument("--intermediate", type=int, default=d.intermediate, help="MLP width of the fresh model")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size, help="size of the trained BPE vocabulary")
    p.add_argument("--steps", type=int, default=d.steps, help="maximum optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per step")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate; default 3e-3 for a fresh model, 5e-5 with --base-model (full fine-tuning of a pretrained model)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="measure QA exact match every N steps (and stop once it reaches --target-em)")
    p.add_argument("--target-em", type=float, default=d.target_em, help="stop when greedy exact match on the QA rows reaches this")
    p.add_argument("--train-on", default=d.train_on, choices=("all", "retain"), help="all = every forget and retain row (the target); retain = the retain rows only (the retain model an unlearned model is compared with; pass --tokenizer TARGET so the two share a tokenizer)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from pipelines.target import make_target

    config = TargetConfig(
        layers=args.layers, hidden=args.hidden, heads=args.heads, intermediate=args.intermediate,
        vocab_size=args.vocab_size, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        eval_every=args.eval_every, target_em=args.target_em, seed=args.seed, tokenizer=args.tokenizer, base_model=args.base_model, train_on=args.train_on,
    )
    manifest = make_target(args.data, args.out, config, overwrite=args.overwrite, device=args.device)
    em = ", ".join(f"{k} {v:.3f}" for k, v in manifest["qa_exact_match"].items())
    print(f"trained {manifest['parameters']:,} parameters for {manifest['steps']} steps in {manifest['seconds']:.0f}s; "
          f"final loss {manifest['final_loss']:.3f}; QA exact match: {em}")
    print(f"wrote {args.out}")
    return 0
