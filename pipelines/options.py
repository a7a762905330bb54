"""Option groups shared by several subcommands, so every stage spells them the same way."""

from __future__ import annotations

import argparse

from unlearn.config import ModelOptions


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--device --dtype --allow-pickle --trust-remote-code`` (see :func:`unlearn.models.load_model`)."""
    group = parser.add_argument_group("model loading")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    group.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="weights dtype; auto = bfloat16 on GPU, float32 on CPU")
    group.add_argument("--allow-pickle", action="store_true", help="allow loading pickle checkpoints (pytorch_model.bin); they can run code, so only for files you trust")
    group.add_argument("--trust-remote-code", action="store_true", help="allow the model repository's own Python code (transformers' trust_remote_code)")


def model_options(args: argparse.Namespace) -> ModelOptions:
    return ModelOptions(device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)


def quiet_progress() -> None:
    """``--quiet``: no progress bars, transformers' own (loading weights, ...) included."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
