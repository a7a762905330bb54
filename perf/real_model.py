"""The default recipe on a real pretrained model: SmolLM2-135M-Instruct fine-tuned on a small SemEval request.

    python ../shared/tools/make_smollm2.py runs/bench/smollm2          # once (pip install gguf first; ~1 min)
    python perf/real_model.py --smollm2 runs/bench/smollm2       # request, target (~1 h once on 2 cores), 3 methods × 3 seeds
    python perf/real_model.py --smollm2 runs/bench/smollm2 --methods sha256 --seeds 0
    python perf/real_model.py --smollm2 runs/bench/smollm2 --methods rmu --seeds 1 --control fixed   # traced vs the paper's layers

The tiny demo targets are 6-layer models trained from scratch; a recipe tuned on them says little
about a pretrained model. This script builds one, offline:

1. **the request** (``WORK/request``, the organizers' layout): the first Task-2 people of the
   public SemEval data (``../shared/data/semeval25``) with all six rows — 8 forget-train,
   3 forget-validation, 8 retain-train, 3 retain-validation people (132 rows); the test MIA
   documents are the forget-train biographies (8) against 16 Task-2 people nobody trains on, the
   validation MIA documents the forget-validation biographies (3) against 8 more;
2. **the target** (``WORK/target``): ``make-target --base-model SMOLLM2`` at lr 3e-4, batch 12,
   until greedy exact match on the QA rows reaches 0.95 (SmolLM2 is a Llama with a chat
   template; prompts are raw, as the organizers' targets);
3. **the runs**: ``configs/semeval_olmo1b.yaml`` adapted only where a small CPU request forces it —
   local paths, fp32, batch 8 with no accumulation, validation once per epoch (9 steps), no
   checkpoints, no re-trace, MMLU from the built-in subset — for each ``--methods`` × ``--seeds``
   (``unlearn.seed``); the learning rate and the epochs are the defaults (``auto``). The trace
   and the target's scores are computed once and reused. ``--control`` adds the run's controls
   (e.g. ``fixed``: for rmu, the paper's layers 5–7 scaled to depth), printed as rows of their own.

Prints one row per run and, per method, the mean and the spread (min–max) over seeds of the
official keys, then one JSON line. CPU-heavy: 35–55 minutes per run on the 2-core sandbox beside other jobs (the trace, 9 minutes, once); not a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import ROOT, SEMEVAL, emit, machine  # noqa: E402

PEOPLE = {"forget_train": 8, "forget_validation": 3, "retain_train": 8, "retain_validation": 3}
NONMEMBERS = {"test": 16, "validation": 8}
RUN_OVERRIDES = [
    "loading.dtype=float32", "loading.device=cpu", "unlearn.bf16=false", "unlearn.batch_size=8", "unlearn.grad_accum=1",
    "unlearn.save_steps=0", "unlearn.eval_steps=9", "evaluate.mmlu=builtin", "retrace=false",
]
KEYS = (("forget QA", "forget knowledge"), ("forget regurg.", "forget regurgitation"), ("retain QA", "retain knowledge"),
        ("retain regurg.", "retain regurgitation"), ("MIA AUC", "MIA AUC (mia_loss_acc)"),
        ("MIA score", "MIA score"), ("MMLU", "MMLU average"), ("final", "aggregate score"))


def person(row_id: str) -> str:
    return re.sub(r"(sc|qa)\d$", "", row_id)


def make_request(out: Path, source: Path = SEMEVAL) -> Path:
    """The small request (module docstring), written once; deterministic."""
    import pandas as pd

    if (out / "request.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    (tmp / "mia_data" / "validation").mkdir(parents=True)
    used, docs = set(), {}
    frames = {s: pd.read_parquet(source / "data" / f"{s}-00000-of-00001.parquet") for s in PEOPLE}
    for split, n in PEOPLE.items():
        df = frames[split]
        df = df[df.task == "Task2"].assign(person=lambda d: d.id.map(person))
        complete = [p for p, g in df.groupby("person", sort=False) if len(g) == 6]
        chosen = complete[:n]
        used |= set(chosen)
        rows = df[df.person.isin(chosen)].drop(columns="person")
        rows.to_parquet(tmp / "data" / f"{split}-00000-of-00001.parquet", index=False)
        docs[split] = [{"id": r.id, "document": r.input + r.output} for r in rows[rows.id.str.endswith("sc1")].itertuples()]
    never = [{"id": r.id, "document": r.input + r.output}
             for split in PEOPLE for r in frames[split][frames[split].task == "Task2"].itertuples()
             if r.id.endswith("sc1") and person(r.id) not in used]

    def jsonl(path: Path, records: list[dict]) -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    jsonl(tmp / "mia_data" / "member.jsonl", docs["forget_train"])
    jsonl(tmp / "mia_data" / "nonmember.jsonl", never[: NONMEMBERS["test"]])
    jsonl(tmp / "mia_data" / "validation" / "member.jsonl", docs["forget_validation"])
    jsonl(tmp / "mia_data" / "validation" / "nonmember.jsonl", never[NONMEMBERS["test"]: NONMEMBERS["test"] + NONMEMBERS["validation"]])
    (tmp / "request.json").write_text(json.dumps({"source": str(source), "people": PEOPLE, "nonmembers": NONMEMBERS}, indent=1), encoding="utf-8")
    tmp.rename(out)
    return out


def make_smol_target(request: Path, base: Path, out: Path) -> dict:
    from pipelines.target import TargetConfig, make_target

    if (out / "target.json").is_file():
        return json.loads((out / "target.json").read_text(encoding="utf-8"))
    config = TargetConfig(base_model=str(base), lr=3e-4, batch_size=12, eval_every=20, steps=400, target_em=0.95)
    return make_target(request, out, config, device="cpu")


def run_one(work: Path, target: Path, request: Path, method: str, seed: int, base_run: Path | None, control: str = "none") -> list[dict]:
    from pipelines.config import load_config
    from pipelines.run import run_pipeline
    from unlearn.eval.report import compare

    out = work / "runs" / (f"{method}_s{seed}" + (f"_{control}" if control != "none" else ""))
    if not (out / "summary.json").is_file():
        if base_run is not None and not out.exists():  # the trace and the target's scores: the same config, skipped
            out.mkdir(parents=True)
            shutil.copy2(base_run / "config.resolved.yaml", out / "config.resolved.yaml")  # marks an amnesia run directory
            for stage in ("trace", "scores_before"):
                if (base_run / stage).is_dir():
                    shutil.copytree(base_run / stage, out / stage)
        config = load_config(ROOT / "configs" / "semeval_olmo1b.yaml",
                             [f"model={target}", f"data={request}", f"unlearn.method={method}", f"unlearn.seed={seed}", f"control={control}", *RUN_OVERRIDES])
        start = time.perf_counter()
        run_pipeline(config, out=out, progress=False, log=lambda m: print(f"  {m}", flush=True))
        print(f"  {method} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    after = {c["metric"]: c["after"] for c in summary["comparison"]}
    before = {c["metric"]: c["before"] for c in summary["comparison"]}
    rows = [row_of(method, seed, out, "unlearned", after, before)]
    for c in (summary.get("controls") or {}).get("rows", [])[1:]:  # the first row is the traced run itself
        scores = json.loads((out / f"control_{c['label']}_scores" / "scores.json").read_text(encoding="utf-8"))
        control_after = {m["metric"]: m["after"] for m in compare(summary["scores_before"], scores)}
        rows.append(row_of(f"{method} {c['label']}", seed, out, f"control_{c['label']}", control_after, before))
    return rows


def row_of(method: str, seed: int, out: Path, stage: str, after: dict, before: dict) -> dict:
    unlearn = json.loads((out / stage / "unlearn.json").read_text(encoding="utf-8"))
    plan = unlearn.get("step_size") or {}
    return {
        "method": method, "seed": seed, "dir": str(out),
        **{label: after.get(key) for label, key in KEYS},
        "retain QA ratio": after["retain knowledge"] / before["retain knowledge"] if before.get("retain knowledge") else None,
        "before": {label: before.get(key) for label, key in KEYS},
        "lr": plan.get("lr"), "epochs": plan.get("epochs"), "steps": unlearn["steps"],
        "kept_step": (unlearn.get("validation") or {}).get("best_step"), "verdict": (unlearn.get("outcome") or {}).get("verdict"),
        "layers": unlearn["layers"], "unlearn_seconds": unlearn.get("wall_time_s"),
    }


def spread(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    if not values:
        return "–"
    return f"{statistics.fmean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smollm2", required=True, help="SmolLM2-135M-Instruct folder (python ../shared/tools/make_smollm2.py OUT)")
    p.add_argument("--work", default="runs/bench/real", help="where the request, the target and the runs go (reused)")
    p.add_argument("--methods", nargs="+", default=["sha256", "gd", "kl"], help="unlearning methods to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="unlearn.seed values")
    p.add_argument("--control", default="none", help="the runs' control (none, fixed, random, sweep, methods): its rows are printed beside the run's")
    p.add_argument("--json-out", default=None, help="also write the JSON figures here")
    args = p.parse_args(argv)

    work = Path(args.work)
    request = make_request(work / "request")
    target_dir = work / "target"
    target = make_smol_target(request, Path(args.smollm2), target_dir)
    print(f"target: {target_dir} (QA exact match {target.get('qa_exact_match')}, {target.get('steps')} steps)", flush=True)
    done = sorted((work / "runs").glob("*/summary.json"))
    rows, base_run = [], done[0].parent if done else None  # an earlier run's trace and scores are reused
    for seed in args.seeds:
        for method in args.methods:
            mine = run_one(work, target_dir, request, method, seed, base_run, args.control)
            base_run = base_run or Path(mine[0]["dir"])
            rows += mine
            for row in mine:
                print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k not in ("before", "dir")), flush=True)
    before = rows[0]["before"]
    print(f"\n{'method':10}" + "".join(f"{label:>26}" for label, _ in KEYS) + f"{'retain QA ratio':>26}")
    print(f"{'target':10}" + "".join(f"{before[label]:>26.3f}" for label, _ in KEYS))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        print(f"{method:10}" + "".join(f"{spread(mine, label):>26}" for label, _ in KEYS) + f"{spread(mine, 'retain QA ratio'):>26}")
    emit({"machine": machine(), "rows": rows, "target": str(target_dir), "before": before}, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
