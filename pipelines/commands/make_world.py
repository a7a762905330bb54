"""Write the synthetic fact world (fictional people with PII) in the organizers' SemEval layout.

Per person one sentence-completion row (sc1) and five QA rows (qa0-qa4: birth date, SSN, phone,
email, address), split into forget/retain × train/validation, plus mia_data/ member and
nonmember biographies. The same arguments give byte-identical files. Prints the data summary.
"""

from __future__ import annotations

import argparse

from pipelines.world import WorldConfig, make_world

NAME = "make-world"
HELP = "write the synthetic SemEval-layout fact world"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = WorldConfig()
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--people", type=int, default=d.people, help="number of fictional people (trained on)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed; same seed, same files")
    p.add_argument("--forget-fraction", type=float, default=d.forget_fraction, help="share of people in the forget set")
    p.add_argument("--validation-fraction", type=float, default=d.validation_fraction, help="share of each set held out as validation")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from unlearn.data import format_summary, load_semeval

    config = WorldConfig(people=args.people, seed=args.seed, forget_fraction=args.forget_fraction, validation_fraction=args.validation_fraction)
    out = make_world(args.out, config, overwrite=args.overwrite)
    print(format_summary(load_semeval(out)))
    print(f"wrote {out}")
    return 0
