"""Score a model with TOFU's metrics and compare it with the retain model (forget quality, privleak).

Scores --model on the TOFU split (forget, retain_perturbed, real authors, world facts: Prob.,
ROUGE-L recall, truth ratio; model utility; Min-K% and loss membership AUC of forget vs holdout)
and the retain model the same way (--retain-model, or the scores.json of an earlier run with
--retain-scores), then forget quality (KS test of the forget-set truth ratios) and privleak.
Writes OUT/scores.json and OUT/predictions.csv (and OUT/retain/ for a retain model scored here)
and OUT/tofu.json with the comparison. For the OpenUnlearning checkpoints, pass the tags they were
fine-tuned with as --question-template (configs/tofu_llama32_1b.yaml has Llama 3's).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.options import add_model_options, model_options, quiet_progress

NAME = "evaluate-tofu"
HELP = "TOFU's metrics of a model against the retain model: forget quality, model utility, privleak"


def _authors(text: str) -> list[int]:
    try:
        return [int(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated author numbers, e.g. 0,1,2") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipelines.tofu.config import TofuEvalConfig
    from tracing import settings

    p.add_argument("--model", required=True, help="model folder (or Hub id) to score, e.g. an unlearned model")
    p.add_argument("--data", default="locuslab/TOFU", help="TOFU data: a folder in the Hub dataset's layout or the Hub id")
    p.add_argument("--split", default="forget01", choices=("forget01", "forget05", "forget10"), help="the forget split (its retain and holdout sets follow)")
    p.add_argument("--retain-model", default=None, help="the retain model (fine-tuned without the forget authors), scored here into OUT/retain/")
    p.add_argument("--retain-scores", default=None, help="instead of --retain-model: the retain model's scores.json from an earlier evaluate-tofu or TOFU run (same split and settings)")
    p.add_argument("--out", required=True, help="folder for scores.json, predictions.csv and tofu.json (created if needed)")
    p.add_argument("--retain-authors", type=_authors, default=None, help="comma-separated retain authors to keep (a CPU-sized subset, as tofu.retain_authors); default: all")
    settings.add_arguments(p, TofuEvalConfig)  # one option per TofuEvalConfig field, its help from the field
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p)


def _score(path: str, args: argparse.Namespace, data, config):
    from pipelines.tofu.evaluation import run_tofu_evaluation
    from unlearn.models import load_model

    model, tok = load_model(path, model_options(args))
    return run_tofu_evaluation(model, tok, data, config, progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    import json

    from pipelines.tofu.config import TofuEvalConfig
    from pipelines.tofu.data import load_tofu, subset
    from tracing import settings
    from pipelines.tofu.evaluation import compare_to_retain, write_outputs
    from tracing.errors import AmnesiaError
    from tracing.io import check_output_path, write_json
    from unlearn.eval.report import check_outputs

    if (args.retain_model is None) == (args.retain_scores is None):
        raise AmnesiaError("give exactly one of --retain-model (score it here) and --retain-scores (its scores.json): forget quality compares with the retain model")
    config = TofuEvalConfig(**settings.from_args(args, TofuEvalConfig))
    config.check()
    out = Path(args.out)
    model_dir = Path(args.model)
    check_output_path(out, model_dir if model_dir.exists() else None, [Path(args.data)], what="the scores")
    check_outputs(out, overwrite=args.overwrite, names=("scores.json", "predictions.csv", "timings.json", "tofu.json") + (("retain",) if args.retain_model else ()))
    retain_scores = None
    if args.retain_scores:
        path = Path(args.retain_scores)
        path = path / "scores.json" if path.is_dir() else path
        try:
            retain_scores = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AmnesiaError(f"{path}: cannot read the retain model's scores ({type(exc).__name__}); expected a scores.json of evaluate-tofu") from None
    data = load_tofu(args.data, args.split)
    if args.retain_authors is not None:
        data = subset(data, args.retain_authors)
    if args.quiet:
        quiet_progress()
    result = _score(args.model, args, data, config)
    if args.retain_model:
        retain = _score(args.retain_model, args, data, config)
        write_outputs(out / "retain", retain)
        retain_scores = retain.scores
    comparison = compare_to_retain(result.scores, retain_scores)  # a mismatch of split or settings fails before anything is written
    paths = write_outputs(out, result)
    write_json(out / "tofu.json", {"schema": 1, "kind": "tofu_comparison", "model": args.model, "retain": args.retain_model or str(args.retain_scores),
                                   "split": data.split, "model_utility": result.scores["model_utility"], **comparison})
    print(f"{'':16}{'forget quality':>16}{'model utility':>15}{'privleak':>10}")
    print(f"{'this model':16}{comparison['forget_quality']:>16.3g}{result.scores['model_utility']:>15.3f}{comparison['privleak']:>10.1f}")
    print(f"scored {sum(result.scores[f'{s}.rows'] for s in ('forget', 'retain', 'real_authors', 'world_facts'))} rows ({data.split}); "
          f"wrote {paths['scores']}, {paths['predictions']} and {out / 'tofu.json'}")
    return 0
