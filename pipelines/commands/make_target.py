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
from tracing import settings

NAME = "make-target"
HELP = "train the tiny target model that memorizes the data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="SemEval-layout data folder (e.g. from make-world)")
    p.add_argument("--out", required=True, help="output model folder (must not exist unless --overwrite)")
    settings.add_arguments(p, TargetConfig)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from pipelines.target import make_target

    config = TargetConfig(**settings.from_args(args, TargetConfig))
    manifest = make_target(args.data, args.out, config, overwrite=args.overwrite, device=args.device)
    em = ", ".join(f"{k} {v:.3f}" for k, v in manifest["qa_exact_match"].items())
    print(f"trained {manifest['parameters']:,} parameters for {manifest['steps']} steps in {manifest['seconds']:.0f}s; "
          f"final loss {manifest['final_loss']:.3f}; QA exact match: {em}")
    print(f"wrote {args.out}")
    return 0
