"""SemEval's run config: the shared sections and the data, a SemEval folder or the synthetic world."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipelines.config import RunSections, config_from_mapping
from pipelines.world import WorldConfig
from tracing.errors import AmnesiaError
from unlearn.eval.config import EvalConfig


@dataclass(frozen=True)
class SemEvalRunConfig(RunSections):
    """Everything a SemEval run does, validated (``benchmark: semeval``, the default).

    ``data``: a SemEval data folder or Hub id; ``world`` (:class:`pipelines.world.WorldConfig`):
    build the synthetic world instead; ``evaluate`` (:class:`unlearn.eval.EvalConfig`): the
    official metrics and MMLU."""

    name: str = "run"
    benchmark: Literal["semeval"] = "semeval"
    data: str | None = None
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    world: WorldConfig | None = None

    def check(self) -> None:
        if (self.data is None) == (self.world is None):
            raise AmnesiaError("give exactly one of 'data' (a SemEval data folder or Hub id) and 'world' (build the synthetic world)")
        if (self.model is None) == (self.target is None):
            raise AmnesiaError("give exactly one of 'model' (the target model folder or Hub id) and 'target' (train the tiny target)")
        super().check()


def semeval_config_from_mapping(data: dict, where: str = "config") -> SemEvalRunConfig:
    """Validate a mapping (``benchmark: semeval`` or none) into a :class:`SemEvalRunConfig`."""
    return config_from_mapping(data, where, SemEvalRunConfig)
