"""Run the whole method from a YAML config: trace → select → unlearn → re-trace → evaluate → report.

Stages go into one run directory (default runs/NAME, or --out): world/ and target/ (when the
config builds them), trace/, unlearned/, retrace/, scores_before/, scores_after/, control_*/
(with --control), then report.md, report.html, summary.json and config.resolved.yaml.
A stage whose config and inputs are unchanged since a completed run is skipped; --force reruns
everything; an interrupted stage is redone (unlearning resumes from its last checkpoint).
Override any config key on the command line: amnesia run configs/demo.yaml unlearn.lr=1e-5 trace.select_k=4
A config with benchmark: tofu runs TOFU instead (configs/tofu_demo.yaml): request/, target/ and
retain_model/, the same trace and unlearning stages, and TOFU's forget quality, model utility and
privleak for the target, the unlearned model and the retain model.
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
    p.add_argument("--control", default=None, choices=CONTROLS, help="also unlearn controls: random (as many random layers), fixed (control_layers or the first k), sweep (every window of k), methods (ga, gd, kl, npo on the same layers, budget, calibration and checkpoint selection; one table with the best marked); default: the config's 'control'")


def print_tofu_headline(summary: dict, run_dir) -> None:
    from pipelines.report import fmt

    print(f"\nselected layers: {summary['selection']['layers']} ({summary['selection']['kind']}); unlearned: {summary['unlearn']['layers']}")
    print(f"{'':26}{'forget quality':>16}{'model utility':>15}{'privleak':>10}")
    for r in summary["tofu"]["rows"]:
        print(f"{('* ' if r.get('best') else '') + r['model']:26}{r['forget_quality']:>16.3g}{fmt(r['model_utility']):>15}{r['privleak']:>10.1f}")
    print_step_size(summary)
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(f"\nreport: {run_dir / 'report.html'} (and report.md, summary.json)")


def print_step_size(summary: dict) -> None:
    from pipelines.report import lr_epochs_cell

    plan = (summary.get("unlearn") or {}).get("step_size")
    if plan:
        reach = f"; the forget rows arrive at the never-seen level in ~{plan['reach_epochs']:.1f} epochs" if plan.get("reach_epochs") else ""
        print(f"\nstep size (lr / epochs): {lr_epochs_cell(plan, None)}{reach}")


def print_headline(summary: dict, run_dir) -> None:
    from pipelines.report import HEADLINE, dig, fmt

    if summary.get("benchmark") == "tofu":
        print_tofu_headline(summary, run_dir)
        return
    print(f"\nselected layers: {summary['selection']['layers']} ({summary['selection']['kind']}); unlearned: {summary['unlearn']['layers']}")
    print(f"{'':24}{'before':>10}{'after':>10}")
    for name, keys in HEADLINE:
        print(f"{name:24}{fmt(dig(summary['scores_before'], keys)):>10}{fmt(dig(summary['scores_after'], keys)):>10}")
    print_step_size(summary)
    validation = (summary.get("unlearn") or {}).get("validation")
    if validation and validation.get("best_step") is not None:
        print(f"\nkept step {validation['best_step']} of {summary['unlearn']['steps']} (best {validation['select_by']} on the validation part)"
              + ("; stopped early" if validation.get("stopped_early") else ""))
    controls = summary.get("controls")
    if controls:
        print(f"\ncontrols ({controls['mode']}), ranked by {controls['rank_by']}:")
        for row in sorted(controls["rows"], key=lambda r: -(r["aggregate"] if isinstance(r.get("aggregate"), (int, float)) else -1)):
            print(f"  {'*' if row.get('best') else ' '} {row['label']:<18} aggregate {fmt(row.get('aggregate')):>7}  task {fmt(row.get('task aggregate')):>7}  MIA {fmt(row.get('MIA score')):>7}"
                  + (f"  lr {row['lr']:.3g}" if isinstance(row.get("lr"), (int, float)) else "")
                  + (f"  displacement to forget {row['arrive_displacement']:.3g}" if isinstance(row.get("arrive_displacement"), (int, float)) else ""))
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(f"\nreport: {run_dir / 'report.html'} (and report.md, summary.json)")


def run(args: argparse.Namespace) -> int:
    from pipelines.run import run_pipeline

    config = load_config(args.config, args.overrides)
    if args.control is not None:
        config = dataclasses.replace(config, control=args.control)
    if args.quiet:
        quiet_progress()
    outcome = run_pipeline(config, out=args.out, force=args.force, progress=not args.quiet)
    print_headline(outcome.summary, outcome.run_dir)
    return 0
