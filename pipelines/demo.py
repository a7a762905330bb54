"""``amnesia demo``: the main job on the embedded default — the demo config, no arguments needed.

The config is :data:`DEMO_CONFIG` (identical to ``configs/demo.yaml``; a test keeps them equal):
a 40-person synthetic world, the tiny OLMo target trained on it, tracing, unlearning of the
forget set in the traced layers, re-tracing and scoring before and after. World and target are
cached stages of the run directory, so a second ``amnesia demo`` reuses them.

MMLU: a local copy (``--mmlu DIR`` or ``AMNESIA_MMLU_DIR``) is used when given; otherwise the
Hub when it answers, else the package's built-in 285-question subset; the output says which.
"""

from __future__ import annotations

import copy

from pipelines.config import RunConfig, config_from_mapping
from pipelines.typed import apply_overrides

DEMO_CONFIG: dict = {
    "name": "demo",
    "world": {"people": 40, "seed": 0},
    "target": {"seed": 0},
    "loading": {"device": "auto"},
    "trace": {"samples": 5, "window": 2, "method": "auto", "max_facts": 32, "heatmaps": 4},
    "unlearn": {
        "method": "sha256", "layers": "auto", "kind": "mlp", "batch_size": 8,
        "grad_accum": 1, "max_length": 128, "logging_steps": 5, "seed": 0, "eval_steps": 15, "patience": 4,
    },
    "evaluate": {"splits": "train", "mmlu": "auto", "mmlu_limit": 5},
    "retrace": True,
}


def resolve_mmlu(mmlu: str | None) -> tuple[str, str]:
    """(source for EvalConfig.mmlu, a sentence for the user saying which MMLU is used).

    Without ``--mmlu``: ``$AMNESIA_MMLU_DIR``, else the Hub when it answers, else the package's
    built-in 285-question subset — so the demo always prints a complete final score.
    """
    from unlearn.eval.mmlu import resolve_source

    if mmlu:
        source = resolve_source(mmlu)
        where = "(--mmlu)"
    else:
        source = resolve_source("auto")
        where = f"({source.why})"
    if source.mode == "off":
        return "off", "MMLU: off (--mmlu off); the aggregate score is therefore -1"
    if source.mode == "builtin":
        return "builtin", f"MMLU: the built-in subset, 5 test questions per subject (285) {where}"
    if source.mode == "hub":
        return "hub", f"MMLU: lm-eval's mmlu from the Hugging Face Hub {where}"
    return str(source.path), f"MMLU: local copy {source.path} {where}"


def demo_config(*, mmlu: str = "off", people: int | None = None, overrides: list[str] = ()) -> RunConfig:
    data = copy.deepcopy(DEMO_CONFIG)
    data["evaluate"]["mmlu"] = mmlu
    if people is not None:
        data["world"]["people"] = people
    return config_from_mapping(apply_overrides(data, list(overrides)), "demo config")
