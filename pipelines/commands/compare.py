"""Compare two scores.json files (before and after unlearning) metric by metric.

Prints a table of every official number (forget/retain regurgitation and knowledge overall and
per task, MIA AUC and score, MMLU average, task aggregate, aggregate score) with the change and
which direction is better; with --out also writes comparison.md and comparison.json there.
"""

from __future__ import annotations

import argparse

NAME = "compare"
HELP = "compare two scores.json files (before/after)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("before", help="scores.json (or the folder holding it) of the model before unlearning")
    p.add_argument("after", help="scores.json (or the folder holding it) of the model after unlearning")
    p.add_argument("--out", default=None, help="folder to write comparison.md and comparison.json into (default: print only)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown instead of a rich table")
    p.add_argument("--overwrite", action="store_true", help="replace existing comparison files in --out")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from unlearn.eval.report import comparison_markdown, comparison_table, compare, load_scores, write_comparison

    before, after = load_scores(args.before), load_scores(args.after)
    rows = compare(before, after)
    if args.markdown:
        print(comparison_markdown(rows, "before", "after"), end="")
    else:
        Console(soft_wrap=True).print(comparison_table(rows, "before", "after"))
    if args.out:
        paths = write_comparison(args.out, rows, str(args.before), str(args.after), overwrite=args.overwrite)
        print(f"wrote {paths['markdown']} and {paths['json']}")
    return 0
