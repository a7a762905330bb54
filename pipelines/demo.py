"""``amnesia demo``: the main job on the embedded default — the demo config, no arguments needed.

The config is :data:`DEMO_CONFIG` (identical to ``configs/demo.yaml``; a test keeps them equal):
a 40-person synthetic world, the tiny OLMo target trained on it, tracing, unlearning of the
forget set in the traced layers, re-tracing and scoring before and after. World and target are
cached stages of the run directory, so a second ``amnesia demo`` reuses them.

MMLU: a local copy (``--mmlu DIR`` or ``AMNESIA_MMLU_DIR``) is used when given; otherwise the
Hub is tried, and when it cannot be reached MMLU is skipped with a message saying so.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from pipelines.config import RunConfig, config_from_mapping
from pipelines.typed import apply_overrides

DEMO_CONFIG: dict = {
    "name": "demo",
    "world": {"people": 40, "seed": 0},
    "target": {"seed": 0},
    "loading": {"device": "auto"},
    "trace": {"samples": 5, "window": 2, "max_facts": 32, "select_k": 2, "heatmaps": 4},
    "unlearn": {
        "method": "sha256", "layers": "auto", "kind": "mlp", "lr": 3.0e-4, "epochs": 6, "batch_size": 8,
        "grad_accum": 1, "max_length": 128, "logging_steps": 4, "seed": 0,
    },
    "evaluate": {"splits": "train", "mmlu": "auto", "mmlu_limit": 5},
    "retrace": True,
}
MMLU_HUB_DATASET = "cais/mmlu"


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when the Hugging Face Hub answers (and offline mode is not set)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(MMLU_HUB_DATASET, timeout=timeout)
        return True
    except Exception:
        return False


def resolve_mmlu(mmlu: str | None) -> tuple[str, str]:
    """(source for EvalConfig.mmlu, a sentence for the user)."""
    if mmlu:
        if mmlu in ("off", "hub"):
            return mmlu, f"MMLU: {mmlu} (--mmlu)"
        return str(Path(mmlu).expanduser()), f"MMLU: local copy {mmlu} (--mmlu)"
    env = os.environ.get("AMNESIA_MMLU_DIR")
    if env:
        return env, f"MMLU: local copy {env} (AMNESIA_MMLU_DIR)"
    if hub_reachable():
        return "hub", "MMLU: from the Hugging Face Hub"
    return "off", ("MMLU: skipped — no local copy (--mmlu DIR or AMNESIA_MMLU_DIR) and the Hugging Face Hub "
                   "is not reachable; the aggregate score is therefore -1")


def demo_config(*, mmlu: str = "off", people: int | None = None, overrides: list[str] = ()) -> RunConfig:
    data = copy.deepcopy(DEMO_CONFIG)
    data["evaluate"]["mmlu"] = mmlu
    if people is not None:
        data["world"]["people"] = people
    return config_from_mapping(apply_overrides(data, list(overrides)), "demo config")
