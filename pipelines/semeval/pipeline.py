"""SemEval-2025 Task 4 end to end (``benchmark: semeval``, the default): the shared stages with the
official metrics and MMLU before and after unlearning.

The data is a SemEval folder in the organizers' layout (or the synthetic world built in
``world/``): the format every stage reads as it is, so only the scores and the report are
SemEval's own — ``scores_before/`` (the target) and ``scores_after/`` (the unlearned model), each
``scores.json`` + ``predictions.csv`` from :mod:`unlearn.eval` (which also scores ``amnesia
evaluate`` and the unlearning stage's validation, hence its place in ``unlearn/``), and the report
of :mod:`pipelines.semeval.report`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipelines.benchmarks import Benchmark, register_benchmark
from pipelines.report import read_json
from pipelines.run import Pipeline, free_model
from pipelines.stages import StageResult, path_fingerprint
from unlearn.models import load_model

from .config import SemEvalRunConfig, semeval_config_from_mapping
from .report import print_semeval_headline, write_report


class SemEvalPipeline(Pipeline):
    """The shared stages with SemEval's data, official scores and report."""

    config: SemEvalRunConfig

    def data_path(self) -> tuple[str, str]:
        """(path, fingerprint) of the data: the synthetic world built in ``world/``, or the configured folder."""
        if self.config.world is not None:
            res = self.run.stage("world", dataclasses.asdict(self.config.world), self._world)
            return str(res.path), res.hash
        return self.config.data, path_fingerprint(self.config.data)

    def _world(self, tmp: Path) -> dict:
        from pipelines.world import make_world

        make_world(tmp, self.config.world, overwrite=True)
        return read_json(tmp / "world.json")["rows"]

    def score_stage(self, label: str) -> str:
        return {"target": "scores_before", "unlearned": "scores_after"}[label]

    def evaluate(self, name: str, model_path: str, model_key: str, data: str, data_key: str) -> StageResult:
        from unlearn.data import load_semeval
        from unlearn.eval import run_evaluation, write_outputs

        cfg = self.config.evaluate

        def build(tmp: Path) -> dict:
            model, tok = load_model(model_path, self.config.loading)
            result = run_evaluation(model, tok, load_semeval(data), cfg, progress=self.progress)
            free_model(model)
            write_outputs(tmp, result.scores, result.predictions, overwrite=True, timings=result.timings)
            return {"aggregate-score": result.scores.get("aggregate-score"), "harmonic-mean-task-aggregate": result.scores.get("harmonic-mean-task-aggregate")}

        return self.run.stage(name, dataclasses.asdict(cfg), build, inputs=[model_key, data_key])

    def audit_task(self, data: str):
        from .audit import SemEvalAudit

        return SemEvalAudit(data, self.config.evaluate, seed=self.config.audit.seed)

    def report(self, run_dir: Path, *, trace, retrace, unlearned, scores: dict, controls: dict, wall_time: float) -> dict:
        return write_report(run_dir, self.config, self.run.results, trace=trace, retrace=retrace, unlearned=unlearned,
                            before=scores["target"], after=scores["unlearned"], controls=controls, wall_time=wall_time)


SUMMARY = "SemEval-2025 Task 4: the official metrics and MMLU, before and after unlearning"
BENCHMARK = register_benchmark(Benchmark(name="semeval", summary=SUMMARY, config_from_mapping=semeval_config_from_mapping, run=SemEvalPipeline.execute, headline=print_semeval_headline))
