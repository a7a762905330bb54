"""``amnesia demo``: the main job on the embedded default — the demo config, no arguments needed.

The config is the package's ``demo.yaml`` (:func:`demo_mapping`; ``configs/demo.yaml`` links to it):
a 40-person synthetic world, the tiny OLMo target trained on it, tracing, unlearning of the
forget set in the traced layers, re-tracing and scoring before and after. World and target are
cached stages of the run directory, so a second ``amnesia demo`` reuses them.

MMLU: a local copy (``--mmlu DIR`` or ``AMNESIA_MMLU_DIR``) is used when given; otherwise the
Hub when it answers, else the package's built-in 285-question subset; the output says which.
"""

from __future__ import annotations

from pipelines.semeval.config import SemEvalRunConfig, semeval_config_from_mapping
from pipelines.typed import apply_overrides
from tracing.settings import load_yaml_text


def demo_mapping() -> dict:
    """The demo config as a mapping: the package's ``demo.yaml`` (``configs/demo.yaml`` links to it)."""
    from importlib.resources import files

    return load_yaml_text(files("pipelines").joinpath("demo.yaml").read_text(encoding="utf-8"), "pipelines/demo.yaml")


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


def demo_config(*, mmlu: str = "off", people: int | None = None, overrides: list[str] = ()) -> SemEvalRunConfig:
    data = demo_mapping()
    data["evaluate"]["mmlu"] = mmlu
    if people is not None:
        data["world"]["people"] = people
    return semeval_config_from_mapping(apply_overrides(data, list(overrides)), "demo config")
