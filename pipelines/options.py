"""Option groups shared by several subcommands, so every stage spells them the same way."""

from __future__ import annotations

import argparse

from tracing import settings
from unlearn.config import ModelOptions


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The "model loading" options, one per :class:`unlearn.config.ModelOptions` field (see :func:`unlearn.models.load_model`)."""
    settings.add_arguments(parser, ModelOptions, titles={"loading": "model loading"})


def model_options(args: argparse.Namespace) -> ModelOptions:
    return ModelOptions(**settings.from_args(args, ModelOptions))


def quiet_progress() -> None:
    """``--quiet``: no progress bars, transformers' own (loading weights, ...) included."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
