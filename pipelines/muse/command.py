"""Score a model with MUSE's metrics: C1 VerbMem, C2 KnowMem on forget, C4 KnowMem on retain, C3 PrivLeak.

Scores --model on a MUSE folder (--data, the authors' layout: verbmem/, knowmem/, privleak/;
../shared/data/muse_news here) as MUSE's eval.py does — ROUGE-L F1 × 100 of greedy outputs
(128 tokens after each VerbMem prompt, 32 per KnowMem answer after the in-context examples) and
Min-40% membership AUC of forget vs holdout articles — and PrivLeak relative to the retain
(retrained) model's AUC when --retain-model is given (scored into OUT/retain/), else to MUSE's
published AUC for the corpus. Writes OUT/scores.json, OUT/predictions.csv and OUT/muse.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.options import add_model_options, model_options, quiet_progress

NAME = "evaluate-muse"
HELP = "MUSE's metrics of a model: VerbMem, KnowMem (forget, retain), PrivLeak against the retain model or MUSE's published one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipelines.muse.config import MuseEvalConfig
    from tracing import settings

    p.add_argument("--model", required=True, help="model folder (or Hub id) to score, e.g. an unlearned model")
    p.add_argument("--data", required=True, help="a MUSE folder in the authors' layout (verbmem/, knowmem/, privleak/), e.g. ../shared/data/muse_news")
    p.add_argument("--retain-model", default=None, help="the retain model (trained without the forget articles): PrivLeak relative to its AUC, scored here into OUT/retain/")
    p.add_argument("--out", required=True, help="folder for scores.json, predictions.csv and muse.json (created if needed)")
    settings.add_arguments(p, MuseEvalConfig)  # one option per MuseEvalConfig field, its help from the field
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p)


def _score(path: str, args: argparse.Namespace, data, config):
    from pipelines.muse.evaluation import run_muse_evaluation
    from unlearn.models import load_model

    model, tok = load_model(path, model_options(args))
    return run_muse_evaluation(model, tok, data, config, progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    from pipelines.muse.config import MuseEvalConfig
    from pipelines.muse.data import load_muse
    from pipelines.muse.evaluation import compare_to_retain, write_outputs
    from tracing import settings
    from tracing.io import check_output_path, write_json
    from unlearn.eval.report import check_outputs

    config = MuseEvalConfig(**settings.from_args(args, MuseEvalConfig))
    config.check()
    out = Path(args.out)
    for model in (args.model, args.retain_model):
        if model:
            check_output_path(out, Path(model) if Path(model).exists() else None, [Path(args.data)], what="the scores")
    check_outputs(out, overwrite=args.overwrite, names=("scores.json", "predictions.csv", "timings.json", "muse.json") + (("retain",) if args.retain_model else ()))
    data = load_muse(args.data)  # bad data fails before any model is loaded
    if args.quiet:
        quiet_progress()
    result = _score(args.model, args, data, config)
    comparison = {}
    retain = None
    if args.retain_model:
        retain = _score(args.retain_model, args, data, config)
        comparison = compare_to_retain(result.scores, retain.scores)
        write_outputs(out / "retain", retain)
    paths = write_outputs(out, result)
    s = result.scores
    privleak = comparison.get("privleak", s["privleak"])
    reference = f"the retain model {args.retain_model} (AUC {comparison['retain_model.privleak_auc']:.4f})" if comparison else s["privleak_reference"]
    write_json(out / "muse.json", {"schema": 1, "kind": "muse_comparison", "model": args.model, "retain": args.retain_model, "corpus": s["corpus"],
                                   "verbmem_f": s["verbmem_f"], "knowmem_f": s["knowmem_f"], "knowmem_r": s["knowmem_r"], "privleak_auc": s["privleak_auc"],
                                   "privleak": privleak, "privleak_reference": reference, **comparison})
    print(f"{'':14}{'VerbMem (C1)':>14}{'KnowMem f (C2)':>16}{'PrivLeak (C3)':>15}{'KnowMem r (C4)':>16}")
    rows = [("this model", s, privleak)] + ([("retain model", retain.scores, 0.0)] if retain else [])
    for label, sc, pl in rows:
        print(f"{label:14}{_one(sc['verbmem_f']):>14}{_one(sc['knowmem_f']):>16}{_one(pl):>15}{_one(sc['knowmem_r']):>16}")
    print(f"PrivLeak relative to {reference}")
    print(f"wrote {paths['scores']}, {paths['predictions']} and {out / 'muse.json'}")
    return 0


def _one(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"
