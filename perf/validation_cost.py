"""The cost of validation during unlearning: the demo's unlearning with and without ``--eval-steps``.

    python perf/validation_cost.py                  # the demo world and target (built once in --cache)
    python perf/validation_cost.py --rounds 2 --json-out runs/bench/validation_cost.json

Both sides run ``unlearn.api.train_unlearning`` with the demo's unlearning settings (sha256, the
calibrated forget target re-measured every step, MLPs of layers 0-1, lr 1e-3 constant, batch 8,
``--epochs``), on the same model, rows and seed:

* ``plain``: no validation (``eval_steps=0``);
* ``validated``: a validation pass every ``--eval-steps`` optimizer steps and at the end
  (knowledge and regurgitation of up to 64 forget- and 64 retain-validation rows, the validation
  MIA documents), keeping the best step's weights; no early stopping, so both sides train the
  same number of steps.

Sides alternate in ABBA order over ``--rounds``; the medians are reported with their ratio and the
seconds per validation pass. Ends with one JSON line. Not a timed test: the numbers depend on the
machine (printed with them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import add_fixture_arguments, describe, emit, fixture_paths, machine  # noqa: E402


def run_side(model_path: Path, data_path: Path, eval_steps: int, epochs: float) -> tuple[float, dict]:
    import torch

    from unlearn.api import train_unlearning
    from unlearn.api import split_rows
    from unlearn.data import load_semeval
    from unlearn.models import ModelOptions, load_model
    from unlearn.config import UnlearnConfig

    data = load_semeval(data_path)
    model, tok = load_model(model_path, ModelOptions(device="cpu", dtype="float32"), for_training=True)
    config = UnlearnConfig(method="sha256", layers=[0, 1], kind="mlp", lr=1e-3, lr_scheduler="constant", epochs=epochs, batch_size=8, grad_accum=1,
                           max_length=128, logging_steps=1000, seed=0, eval_steps=eval_steps)
    torch.manual_seed(0)
    start = time.perf_counter()
    run = train_unlearning(model, tok, split_rows(data, "forget"), split_rows(data, "retain"), config, progress=False, device="cpu", data=data)
    return time.perf_counter() - start, run.report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fixture_arguments(p, "runs/bench/fixture", "SemEval-layout data with validation splits and mia_data/validation/")
    p.add_argument("--epochs", type=float, default=4.0, help="passes over the forget set per run (the demo runs up to 12)")
    p.add_argument("--eval-steps", type=int, default=15, help="validate every N optimizer steps (the demo: 15, once per epoch)")
    p.add_argument("--rounds", type=int, default=1, help="ABBA rounds (2 runs of each side per round)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json-out", default=None, help="also write the JSON figures here")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data, model = fixture_paths(args)
    info = machine()
    print(f"machine: {describe(info)}")
    times: dict[str, list[float]] = {"plain": [], "validated": []}
    evaluations = steps = 0
    for _ in range(args.rounds):
        for side in ("plain", "validated", "validated", "plain"):
            seconds, report = run_side(model, data, args.eval_steps if side == "validated" else 0, args.epochs)
            times[side].append(seconds)
            steps = report["steps"]
            if side == "validated":
                evaluations = len(report["validation"]["history"])
            print(f"{side:>9}: {seconds:6.1f} s for {report['steps']} steps")
    plain, validated = statistics.median(times["plain"]), statistics.median(times["validated"])
    figures = {
        "benchmark": "validation_cost",
        "steps": steps,
        "eval_steps": args.eval_steps,
        "evaluations": evaluations,
        "plain_s": round(plain, 2),
        "validated_s": round(validated, 2),
        "ratio": round(validated / plain, 3),
        "seconds_per_evaluation": round((validated - plain) / max(1, evaluations), 2),
        "runs": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "machine": info,
    }
    print(f"validation every {args.eval_steps} steps ({evaluations} passes): {validated:.1f} s vs {plain:.1f} s without, "
          f"{validated / plain:.2f}x, {figures['seconds_per_evaluation']:.2f} s per pass")
    return emit(figures, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
