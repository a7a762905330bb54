"""Batched SemEval evaluation vs the plain one-row-at-a-time loop: same model, same rows.

    python perf/eval_speed.py              # builds (once) the 40-person world and tiny target in runs/bench-eval
    python perf/eval_speed.py --model DIR --data DIR --rows 200 --dtype float32

Per row both sides produce what ``predictions.csv`` holds: the greedy generation (256 new tokens,
stop at EOS), its regurgitation / knowledge score and the NLL of ``input + output`` with the loss
on the output. The reference does it the way the organizers' script does: tokenize one row,
``model.generate``, decode, ``model(ids, labels=labels).loss``, score. The batched side is
``unlearn.generation.generate`` (length-sorted left-padded batches, KV cache, automatic batch
size, near-tie reruns) and ``unlearn.eval.nll.completion_nll`` (right-padded batches with
row-exact attention). Prints rows/s of each, the ratio and whether every text, score and NLL is
identical, and ends with one JSON line (plus the CPU-time ratio and the thread count).

On a CPU shared with other jobs, OpenMP threads that spin-wait for a descheduled partner make
the batched side (large parallel matmuls) many times slower while the one-row loop (mostly
Python overhead) hardly suffers: measure with ``--threads 1`` or ``OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))

from bench_common import add_fixture_arguments, fixture_paths  # noqa: E402

from unlearn.data import load_semeval  # noqa: E402
from unlearn.eval.config import DEFAULT_TIE_MARGIN  # noqa: E402
from unlearn.eval.metrics import score_row  # noqa: E402
from unlearn.eval.nll import NLLOptions, completion_nll  # noqa: E402
from unlearn.generation import GenerationOptions, clean_up_spaces, generate  # noqa: E402
from unlearn.models import ModelOptions, load_model  # noqa: E402


def bench_rows(data, n: int) -> list[dict]:
    """``n`` rows spread over every split (every k-th row of forget/retain × train/validation)."""
    rows = []
    for name, ds in data.splits.items():
        for r in ds:
            rows.append(r)
    step = max(1, len(rows) // n)
    return rows[::step][:n]


@torch.no_grad()
def reference(model, tok, rows: list[dict], max_new_tokens: int) -> list[dict]:
    """The organizers' loop: one row at a time, generate, decode, NLL, score."""
    out = []
    for r in rows:
        ids = tok(r["input"], return_tensors="pt").input_ids.to(model.device)
        gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=tok.eos_token_id)
        text = clean_up_spaces(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
        full = tok(r["input"] + r["output"], return_tensors="pt").input_ids.to(model.device)
        labels = full.clone()
        labels[:, : ids.shape[1]] = -100
        nll = model(full, labels=labels).loss.item()
        out.append({"text": text, "nll": nll, "score": score_row(r["id"], r["output"], text)})
    return out


def batched(model, tok, rows: list[dict], max_new_tokens: int, batch_size: int | None, tie: float | None) -> tuple[list[dict], dict]:
    gen = generate(model, tok, [r["input"] for r in rows], GenerationOptions(max_new_tokens=max_new_tokens, batch_size=batch_size, clean_up_spaces=True, tie_margin=tie))
    nll = completion_nll(model, tok, [r["input"] for r in rows], [r["output"] for r in rows], NLLOptions(batch_size=batch_size))
    out = [{"text": t, "nll": n, "score": score_row(r["id"], r["output"], t)} for r, t, n in zip(rows, gen.texts, nll)]
    return out, {"batches": gen.batch_sizes, "reruns": len(gen.reruns), "min_margin": gen.min_margin}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_fixture_arguments(p, "runs/bench-eval", "SemEval-layout data")
    p.add_argument("--rows", type=int, default=120, help="rows scored by both sides (spread over all splits)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="new tokens per row (the organizers use 256)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per batch; None = automatic")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--dtype", default="float32", help="float32 (where identity is promised), bfloat16, float16, auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_path, model_path = fixture_paths(args)
    model, tok = load_model(model_path, ModelOptions(device=args.device, dtype=args.dtype))
    rows = bench_rows(load_semeval(data_path), args.rows)
    tie = DEFAULT_TIE_MARGIN if next(model.parameters()).dtype == torch.float32 else None
    batched(model, tok, rows[:4], 8, args.batch_size, tie)  # warm-up (allocator, kernels)

    start, cpu = time.perf_counter(), time.process_time()
    ours, info = batched(model, tok, rows, args.max_new_tokens, args.batch_size, tie)
    t_batched, c_batched = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    ref = reference(model, tok, rows, args.max_new_tokens)
    t_reference, c_reference = time.perf_counter() - start, time.process_time() - cpu

    texts = sum(a["text"] == b["text"] for a, b in zip(ours, ref))
    nlls = sum(a["nll"] == b["nll"] for a, b in zip(ours, ref))
    scores = sum(a["score"] == b["score"] for a, b in zip(ours, ref))
    identical = texts == nlls == scores == len(rows)
    nll_diff = max(abs(a["nll"] - b["nll"]) for a, b in zip(ours, ref))
    figures = {
        "rows": len(rows),
        "rows_per_s_batched": round(len(rows) / t_batched, 3),
        "rows_per_s_reference": round(len(rows) / t_reference, 3),
        "ratio": round(t_reference / t_batched, 2),
        "identical": identical,
        "max_abs_nll_diff": nll_diff,
        "cpu_ratio": round(c_reference / c_batched, 2),
        "threads": torch.get_num_threads(),
    }
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"model {model_path} ({sum(p.numel() for p in model.parameters()):,} parameters, {next(model.parameters()).dtype}) on {device}")
    print(f"rows {len(rows)}, max_new_tokens {args.max_new_tokens}, batches {info['batches']}, near-tie reruns {info['reruns']} (smallest top-2 gap {info['min_margin']})")
    print(f"batched   {t_batched:8.2f} s  {figures['rows_per_s_batched']:8.2f} rows/s  (CPU time {c_batched:.2f} s)")
    print(f"reference {t_reference:8.2f} s  {figures['rows_per_s_reference']:8.2f} rows/s  (CPU time {c_reference:.2f} s)")
    print(f"ratio {figures['ratio']}x; identical texts {texts}/{len(rows)}, scores {scores}/{len(rows)}, NLLs {nlls}/{len(rows)} (max |ΔNLL| {nll_diff:.2e})")
    print(json.dumps(figures))
    # fp32 promises the same texts and scores everywhere; bit-identical NLLs only on CPU (GPU kernels depend on the batch shape)
    promised = texts == scores == len(rows) and (nlls == len(rows) or model.device.type != "cpu")
    return 0 if promised or next(model.parameters()).dtype != torch.float32 else 1


if __name__ == "__main__":
    sys.exit(main())
