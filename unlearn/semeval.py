"""The SemEval-2025 Task 4 submission entry point.

The organizers call one function with four paths::

    from unlearn.semeval import unlearn
    unlearn("/path/to/target-model", "/path/to/output", "/path/to/forget_dir", "/path/to/retain_dir")

``forget_dir`` / ``retain_dir`` are folders of ``.parquet`` or ``.jsonl`` files in the shared
task's layout (columns ``id, input, output, task, split``). The default pipeline runs with the
paper's hyperparameters (:func:`paper_config`): the MLPs of layers 0-5 train with the sha256
joint loss, lr 1.5e-5, batch 12 × accumulation 10, 8 epochs, bf16 where the GPU supports it.
The entry point receives no never-seen reference documents and no validation data, so it runs
the paper's uncalibrated forget term (−CE on the answers, EOS included); ``amnesia unlearn`` and
``amnesia run`` calibrate it and select checkpoints (see ``unlearn.calibration``).
The output is a standard HF model folder plus ``unlearn.json``. Nothing is downloaded and
nothing from ``pipelines`` is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .api import run_unlearning
from .data import load_split_dir
from .models import ModelOptions
from .trainer import UnlearnConfig


def paper_config() -> UnlearnConfig:
    """The paper's setting for OLMo-1B/7B; bf16 mixed precision when CUDA supports it."""
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return UnlearnConfig(method="sha256", layers="0-5", kind="mlp", lr=1.5e-5, batch_size=12, grad_accum=10, epochs=8, bf16=bf16,
                         forget_target="none", forget_tokens="output", forget_eos=True, splits=["train"], lr_scheduler="linear")


def unlearn(
    input_path_to_unlearning_candidate_model: str | os.PathLike,
    output_path_to_write_unlearned_model: str | os.PathLike,
    path_to_forget_set: str | os.PathLike,
    path_to_retain_set: str | os.PathLike,
    *,
    config: UnlearnConfig | None = None,
    progress: bool = True,
) -> dict:
    """Unlearn the forget set from the model and write the result; the shared task's signature.

    ``config`` (keyword-only, not used by the organizers) replaces :func:`paper_config`.
    Returns the ``unlearn.json`` manifest.
    """
    forget_dir = Path(path_to_forget_set)
    retain_dir = Path(path_to_retain_set)
    forget = load_split_dir(forget_dir, "forget")
    retain = load_split_dir(retain_dir, "retain")
    return run_unlearning(
        input_path_to_unlearning_candidate_model,
        (forget, retain),
        output_path_to_write_unlearned_model,
        config or paper_config(),
        model_options=ModelOptions(device="auto", dtype="auto"),
        progress=progress,
        data_paths=[forget_dir, retain_dir],
    )
