"""Batched causal tracing vs ROME's one-restoration-per-forward loop: same model, facts and noise.

    python benchmarks/trace_speed.py            # builds (once) the 40-person world and tiny target in runs/bench-trace
    python benchmarks/trace_speed.py --model DIR --data DIR --facts 10

Both sides run inside one booted TransformerBridge on the same facts with the same noise draws,
interleaved fact by fact (so a busy machine slows each side alike):
``tracing.reference.trace_fact_reference`` (ROME's loop: ``1 + samples`` rows of the full prompt
per restoration, every token and layer) and ``tracing.tracer.trace_fact`` (all restorations of a
token batched, clean activations and the corrupted prefix computed once, only the suffix after
the restored token run). The batched tracer is also timed with full sequences (``--no-suffix``
path) to separate batching from the suffix trick. Prints facts/s of each, the ratio, the
largest |ΔIE|, the work each side does in token·layer evaluations (the restorations' share
against full-sequence batching, next to the ¼ bound of also skipping the layers before the
restored one), and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import add_fixture_arguments, fixture_paths  # noqa: E402

from tracing import TraceConfig, bridged, draw_noise, embedding_std, facts_from_rows, prepare_facts, restored_layers, trace_fact, trace_fact_reference  # noqa: E402
from tracing.bridge import suffix_cache_works  # noqa: E402


def work(tf, n_layers: int, config: TraceConfig, suffix: bool) -> dict[str, float]:
    """Token·layer evaluations of one fact's restorations (rows × tokens × layers)."""
    T, (s, _) = len(tf.input_ids), tf.subject_range
    S, L = config.samples, n_layers
    kinds = len(config.kinds)
    reference = kinds * T * L * (1 + S) * T * L  # ROME: every (t, l), clean row + S noisy rows, full prompt
    full = kinds * T * L * S * T * L  # every restoration batched, full sequences
    ours = 0  # what trace_fact runs: unique restorations at t >= s, suffix only (or full sequences)
    bound = 0  # also skipping the layers before the first restored one
    for kind in config.kinds:
        for t in range(s, T):
            windows = {tuple(restored_layers(kind, l, L, config.window)) for l in range(L)}
            ours += len(windows) * S * (T - t if suffix else T) * L
        for t in range(T):
            for l in range(L):
                bound += S * (T - t) * (L - restored_layers(kind, l, L, config.window)[0])
    return {"reference": reference, "full": full, "ours": ours, "bound": bound}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_fixture_arguments(p, "runs/bench-trace", "SemEval-layout data the facts come from")
    p.add_argument("--facts", type=int, default=6, help="facts to trace (the first kept forget-train Task-2 QA facts)")
    p.add_argument("--samples", type=int, default=10, help="noise samples per fact")
    p.add_argument("--window", type=int, default=10, help="ROME's MLP/attention window")
    p.add_argument("--kinds", default="hidden,mlp,attn", help="kinds traced")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from unlearn.data import load_semeval
    from unlearn.models import ModelOptions, load_model

    data_dir, model_dir = fixture_paths(args)
    model, tok = load_model(model_dir, ModelOptions(device="cpu", dtype="float32"))
    facts, _ = facts_from_rows(load_semeval(data_dir).get("forget", "train"))
    kept = prepare_facts(model, tok, facts).kept[: args.facts]
    config = TraceConfig(kinds=tuple(args.kinds.split(",")), samples=args.samples, window=args.window, seed=args.seed).check()
    print(f"{model_dir}: {len(kept)} facts, {len(config.kinds)} kinds, samples {config.samples}, window {config.window}, "
          f"torch {torch.__version__} on {platform.processor() or platform.machine()} with {torch.get_num_threads()} threads")

    with bridged(model, tok) as bridge:
        n_layers, d_model = int(bridge.cfg.n_layers), int(bridge.cfg.d_model)
        std = 3 * embedding_std(bridge, kept)
        suffix = suffix_cache_works(bridge, model, torch.tensor(kept[0].input_ids))
        noises = [draw_noise(config.seed, i, config.samples, tf.subject_range[1] - tf.subject_range[0], d_model, std) for i, tf in enumerate(kept)]
        trace_fact(bridge, model, kept[0], noises[0], config, suffix=suffix)  # warm-up

        runs = {
            "batched": lambda tf, n: trace_fact(bridge, model, tf, n, config, suffix=suffix),
            "full": lambda tf, n: trace_fact(bridge, model, tf, n, config, suffix=False),
            "reference": lambda tf, n: trace_fact_reference(bridge, tf, n, config),
        }
        out = {name: [] for name in runs}
        seconds = dict.fromkeys(runs, 0.0)
        for tf, noise in zip(kept, noises):  # interleaved per fact, so a busy machine slows all alike
            for name, fn in runs.items():
                start = time.perf_counter()
                out[name].append(fn(tf, noise))
                seconds[name] += time.perf_counter() - start
        batched, full, reference = out["batched"], out["full"], out["reference"]
        t_batched, t_full, t_reference = seconds["batched"], seconds["full"], seconds["reference"]

    diff = max(float(np.abs(a.ie[k] - b.ie[k]).max()) for a, b in zip(batched, reference) for k in config.kinds)
    diff_full = max(float(np.abs(a.ie[k] - b.ie[k]).max()) for a, b in zip(full, reference) for k in config.kinds)
    w = {key: sum(work(tf, n_layers, config, suffix)[key] for tf in kept) for key in ("reference", "full", "ours", "bound")}
    n = len(kept)
    fps_b, fps_f, fps_r = n / t_batched, n / t_full, n / t_reference
    print(f"suffix trick verified for this model: {suffix}")
    print(f"reference (ROME loop)        : {fps_r:8.3f} facts/s ({t_reference:.1f} s)")
    print(f"batched, full sequences      : {fps_f:8.3f} facts/s ({t_full:.1f} s), x{fps_f / fps_r:.1f}, max |dIE| {diff_full:.2e}")
    print(f"batched + suffix (default)   : {fps_b:8.3f} facts/s ({t_batched:.1f} s), x{fps_b / fps_r:.1f}, max |dIE| {diff:.2e}")
    print(f"work (token-layer evaluations) relative to full-sequence batching: ours {w['ours'] / w['full']:.3f}, "
          f"suffix + layer-skipping bound {w['bound'] / w['full']:.3f} (the 1/4 bound), ROME loop {w['reference'] / w['full']:.2f}")
    result = {
        "facts_per_s_batched": round(fps_b, 4),
        "facts_per_s_reference": round(fps_r, 4),
        "ratio": round(fps_b / fps_r, 2),
        "max_abs_diff": diff,
        "facts_per_s_batched_full_sequences": round(fps_f, 4),
        "work_fraction_ours": round(w["ours"] / w["full"], 4),
        "work_fraction_bound": round(w["bound"] / w["full"], 4),
        "suffix": suffix,
        "facts": n,
        "samples": config.samples,
        "window": config.window,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
