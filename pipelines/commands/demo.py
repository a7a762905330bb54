"""The main job on the embedded default, no arguments needed: the whole method on a synthetic world.

Makes the synthetic fact world and the tiny OLMo target (cached in the run directory), traces
where the target stores the forget set's facts, unlearns them in the traced layers, re-traces,
scores the target and the unlearned model (official SemEval-2025 Task 4 metrics; MMLU from a
local copy, else the Hub, else the package's built-in 285-question subset, so the final score is
always complete) and writes the report.
The config is configs/demo.yaml. A few minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse

from pipelines.demo import demo_config, resolve_mmlu
from pipelines.options import quiet_progress

NAME = "demo"
HELP = "run the whole method on the synthetic world (no arguments needed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="amnesia-demo", help="run directory (reused: unchanged stages are skipped)")
    p.add_argument("--control", default=None, choices=("none", "random", "fixed", "sweep", "methods"), help="also unlearn with controls: methods = every other registered method (ga, gd, kl, npo, simnpo, …; control_methods=[…] picks some) on the same layers, budget and selection rule (one table); default: none")
    p.add_argument("--mmlu", default=None, help="MMLU source: a local copy in hails/mmlu_no_train layout, hub, builtin (the package's 285-question subset) or off; default: $AMNESIA_MMLU_DIR, else the Hub when reachable, else builtin")
    p.add_argument("--people", type=int, default=None, help="people in the synthetic world (default: the demo config's 40)")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the stage lines and the headline table still print)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the demo config, e.g. unlearn.epochs=4")


def run(args: argparse.Namespace) -> int:
    from pipelines.semeval.report import print_semeval_headline
    from pipelines.run import run_pipeline

    mmlu, note = resolve_mmlu(args.mmlu)
    print(note)
    config = demo_config(mmlu=mmlu, people=args.people, overrides=args.overrides)
    if args.control is not None:
        import dataclasses

        config = dataclasses.replace(config, control=args.control)
    if args.quiet:
        quiet_progress()
    outcome = run_pipeline(config, out=args.out, force=args.force, progress=not args.quiet)
    print_semeval_headline(outcome.summary, outcome.run_dir)
    print(note)
    return 0
