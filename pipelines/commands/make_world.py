"""Write the synthetic fact world (fictional people with PII) in the organizers' SemEval layout.

Per person one sentence-completion row (sc1) and five QA rows (qa0-qa4: birth date, SSN, phone,
email, address), split into forget/retain × train/validation, plus mia_data/ member and
nonmember biographies. The same arguments give byte-identical files. Prints the data summary.
"""

from __future__ import annotations

import argparse

from pipelines.world import WorldConfig, make_world
from tracing import settings

NAME = "make-world"
HELP = "write the synthetic SemEval-layout fact world"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    settings.add_arguments(p, WorldConfig)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from unlearn.data import format_summary, load_semeval

    config = WorldConfig(**settings.from_args(args, WorldConfig))
    out = make_world(args.out, config, overwrite=args.overwrite)
    print(format_summary(load_semeval(out)))
    print(f"wrote {out}")
    return 0
