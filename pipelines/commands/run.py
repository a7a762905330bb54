"""Run the whole method from a YAML config: trace → select → unlearn → re-trace → evaluate → report.

Stages go into one run directory (default runs/NAME, or --out): world/ and target/ (when the
config builds them), trace/, unlearned/, retrace/, scores_before/, scores_after/, control_*/
(with --control), then report.md, report.html, summary.json and config.resolved.yaml.
A stage whose config and inputs are unchanged since a completed run is skipped; --force reruns
everything; an interrupted stage is redone (unlearning resumes from its last checkpoint).
Override any config key on the command line: amnesia run configs/demo.yaml unlearn.lr=1e-5 trace.select_k=4
A config with benchmark: tofu runs TOFU instead (configs/tofu_demo.yaml): request/, target/ and
retain_model/, the same trace and unlearning stages, and TOFU's forget quality, model utility and
privleak for the target, the unlearned model and the retain model; benchmark: muse runs MUSE
(configs/muse_demo.yaml: a CPU-sized MUSE-News, its retain model, VerbMem, KnowMem and PrivLeak);
any registered benchmark (pipelines.benchmarks) runs the same way.
"""

from __future__ import annotations

import argparse
import dataclasses

from pipelines.config import CONTROLS, load_config
from pipelines.options import quiet_progress

NAME = "run"
HELP = "run trace → unlearn → re-trace → evaluate from a YAML config"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides applied to the config, e.g. unlearn.lr=1e-5 trace.select_k=4")
    p.add_argument("--out", default=None, help="run directory (default: the config's 'out', else runs/NAME)")
    p.add_argument("--force", action="store_true", help="rerun every stage even when its config and inputs are unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the stage lines and the headline table still print)")
    p.add_argument("--control", default=None, choices=CONTROLS, help="also unlearn controls: random (as many random layers), fixed (control_layers; unset: the layers the method's paper updates, scaled to depth — rmu — else the first k), sweep (every window of k), methods (every other registered method, or the config's control_methods, on the same layers, budget, calibration and checkpoint selection; one table with the best marked); default: the config's 'control'")


def run(args: argparse.Namespace) -> int:
    from pipelines.benchmarks import get_benchmark
    from pipelines.run import run_pipeline

    config = load_config(args.config, args.overrides)
    if args.control is not None:
        config = dataclasses.replace(config, control=args.control)
    if args.quiet:
        quiet_progress()
    outcome = run_pipeline(config, out=args.out, force=args.force, progress=not args.quiet)
    get_benchmark(config.benchmark).headline(outcome.summary, outcome.run_dir)
    return 0
