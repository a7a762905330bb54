"""The GPU check: unlearning, tracing, batched evaluation and MMLU throughput of a random OLMo-1B-0724, offline.

    perf/gpu_check.sh                         # on one GPU: the real OLMo-1B-0724 shape, bf16 (see gpu_check.sh)
    python perf/gpu_check.py --smoke          # CPU, tiny shapes, ~3 minutes: the same code end to end

Builds a randomly initialised model from ``perf/model_configs/olmo-1b-0724.json`` (no
download; tokenizer and data from ``../shared``) and measures, each section in its own process
with its own time limit (one failing or slow section loses only itself):

* ``unlearn`` — ``perf/unlearn_memory.py`` at full size: one optimizer step of the default
  method (12 + 12 rows × accumulation 10, ``max_length`` 512, fp32 master weights + bf16
  autocast, the project's GPU setting), layers 0-5 MLP vs every parameter: tokens/s, peak
  memory (``torch.cuda.max_memory_allocated``), step time, optimizer state;
* ``trace`` — exact causal tracing (``trace_facts``' steps: bridge boot, then each fact; the
  tracer's default fp32 tracing of the bf16 model) on SemEval Task-2 forget-train facts with the
  known-facts filter off (a random model predicts nothing): facts/s and the one-off setup;
* ``eval`` — batched evaluation of SemEval rows (greedy generation with 256 new tokens + the
  output NLL, in bf16): rows/s and generated tokens/s;
* ``mmlu`` — ``unlearn.eval.mmlu.run_mmlu`` (lm-eval, stock 0-shot prompt) on the local
  ``mmlu_no_train`` copy, all 57 subjects at two ``--mmlu-limits``: the difference gives the
  marginal questions/s, the rest is lm-eval's fixed cost;
* ``projection`` — the full SemEval runs (8 epochs; MMLU) in minutes from these measurements
  (``perf/projection.py``; OLMo-7B by FLOP ratio from the 1B rates).

Prints one table and one JSON line; writes ``gpu_check.json`` (+ one JSON per section and the
sections' logs) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

from bench_common import MMLU, OLMO_1B, ROOT, SEMEVAL, TOKENIZER, last_json_line  # noqa: E402

SECTIONS = ("unlearn", "trace", "eval", "mmlu", "projection")
HERE = Path(__file__).resolve().parent


def settings(args) -> dict:
    """Sizes per mode: the real shape on a GPU, tiny ones for ``--smoke`` on CPU."""
    if args.smoke:
        return {
            "device": args.device or "cpu", "dtype": "float32", "hidden": 128, "layers": 6,
            "unlearn": ["--rounds", "1", "--hidden-override", "128", "--batch-size", "2", "--grad-accum", "1", "--max-length", "64", "--steps", "2"],
            "facts": 2, "samples": 3, "rows": 4, "new_tokens": 8, "subjects": ["anatomy", "philosophy"], "limits": [1, 2],
        }
    return {
        "device": args.device or "cuda", "dtype": "bfloat16", "hidden": 0, "layers": 0,
        "unlearn": ["--rounds", "1", "--hidden-override", "0", "--vocab-override", "0", "--bf16", "--batch-size", "12", "--grad-accum", "10", "--max-length", "512", "--steps", "3"],
        "facts": args.facts, "samples": 10, "rows": args.rows, "new_tokens": 256, "subjects": [], "limits": args.mmlu_limits,
    }


def build(s: dict):
    import torch

    from bench_common import olmo_config, olmo_tokenizer, random_olmo

    cfg = olmo_config(OLMO_1B, hidden=s["hidden"] or None, layers=s["layers"] or None, heads=4 if s["hidden"] else None)
    model = random_olmo(cfg, seed=0, dtype=getattr(torch, s["dtype"]), device=s["device"])
    model.eval()
    return model, olmo_tokenizer(TOKENIZER)


def peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


# --------------------------------------------------------------------------- sections (each in a child process)


def section_trace(args, s: dict) -> dict:
    from scaling import trace_cost
    from tracing import TraceConfig, facts_from_rows, prepare_facts
    from tracing.facts import FactSet
    from unlearn.data import load_semeval

    model, tok = build(s)
    facts, _ = facts_from_rows(load_semeval(SEMEVAL).get("forget", "train"))
    kept = prepare_facts(model, tok, facts, check_prediction=False).kept[: s["facts"] + 1]
    config = TraceConfig(samples=s["samples"]).check()
    trace_cost(model, tok, FactSet(kept=kept[:1]), TraceConfig(samples=2))  # warm-up (kernels, allocator)
    r = trace_cost(model, tok, FactSet(kept=kept[1:]), config)
    n = len(kept) - 1
    return {"facts": n, "tokens_mean": sum(len(tf.input_ids) for tf in kept[1:]) / n, "samples": config.samples, "kinds": list(config.kinds),
            "facts_per_s": 1 / r["per_fact_s"], "setup_s": r["setup_s"], "total_s": r["total_s"], "suffix": r["suffix"], "peak_gib": peak_gib(s["device"])}


def section_eval(args, s: dict) -> dict:
    import torch

    from unlearn.data import load_semeval
    from unlearn.eval.config import DEFAULT_TIE_MARGIN
    from unlearn.eval.nll import NLLOptions, completion_nll
    from unlearn.generation import GenerationOptions, generate

    model, tok = build(s)
    data = load_semeval(SEMEVAL)
    rows = [r for name in ("forget_validation", "retain_validation") for r in data.splits[name]]
    rows = rows[:: max(1, len(rows) // s["rows"])][: s["rows"]]
    tie = DEFAULT_TIE_MARGIN if s["dtype"] == "float32" else None  # the evaluation's own default per dtype
    options = GenerationOptions(max_new_tokens=s["new_tokens"], clean_up_spaces=True, tie_margin=tie)
    generate(model, tok, [r["input"] for r in rows[:4]], GenerationOptions(max_new_tokens=4))  # warm-up
    if s["device"].startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    gen = generate(model, tok, [r["input"] for r in rows], options)
    t_gen = time.perf_counter() - start
    completion_nll(model, tok, [r["input"] for r in rows], [r["output"] for r in rows], NLLOptions())
    if s["device"].startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    return {"rows": len(rows), "max_new_tokens": s["new_tokens"], "rows_per_s": len(rows) / total, "generated_tokens_per_s": sum(gen.new_tokens) / t_gen,
            "generation_s": t_gen, "nll_s": total - t_gen, "batches": gen.batch_sizes, "reruns": len(gen.reruns), "peak_gib": peak_gib(s["device"])}


def section_mmlu(args, s: dict) -> dict:
    from unlearn.eval.mmlu import MMLUConfig, run_mmlu

    model, tok = build(s)
    first = s["subjects"][:1] or ["anatomy"]
    run_mmlu(model, tok, MMLUConfig(source=str(MMLU), limit=1, subjects=tuple(first)))  # warm-up: lm-eval's imports, kernels
    runs: list[dict] = []
    summary: dict = {}
    for limit in s["limits"]:
        start = time.perf_counter()
        res = run_mmlu(model, tok, MMLUConfig(source=str(MMLU), limit=limit, subjects=tuple(s["subjects"])))
        runs.append({"limit": limit, "questions": res["questions"], "seconds": time.perf_counter() - start, "subjects": len(res["subjects"])})
        a, b = runs[0], runs[-1]
        marginal = b["seconds"] > a["seconds"] and b["questions"] > a["questions"]
        if marginal:
            qps = (b["questions"] - a["questions"]) / (b["seconds"] - a["seconds"])  # lm-eval's fixed cost cancels
        else:  # one run so far (or too noisy to subtract): fixed cost included
            qps = b["questions"] / b["seconds"]
        summary = {"runs": list(runs), "questions_per_s": qps, "requests_per_s": 4 * qps, "overhead_s": max(0.0, a["seconds"] - a["questions"] / qps),
                   "marginal": marginal, "peak_gib": peak_gib(s["device"])}
        print(json.dumps(summary), flush=True)  # a timeout after this run still leaves these numbers
    return summary


def section_unlearn(args, s: dict) -> dict:
    out = Path(args.out) / "unlearn_memory.json"
    cmd = [sys.executable, str(HERE / "unlearn_memory.py"), "--device", s["device"], "--json-out", str(out), *s["unlearn"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    (Path(args.out) / "unlearn_memory.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError("unlearn_memory.py failed: " + " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:]))
    return last_json_line(proc.stdout)


def section_projection(args, s: dict) -> dict:
    from projection import measured_projection, projection

    proj = projection()
    measured = {}
    folder = Path(args.out)
    u, m = folder / "unlearn.json", folder / "mmlu.json"
    if u.is_file() and json.loads(u.read_text()).get("ok"):
        r = json.loads(u.read_text())["result"]
        measured["unlearn_padded_tokens_per_s_partial"] = r.get("padded_tokens_per_s_mlp")
        measured["unlearn_padded_tokens_per_s_full"] = r.get("padded_tokens_per_s_full")
    if m.is_file() and json.loads(m.read_text()).get("ok"):
        r = json.loads(m.read_text())["result"]
        measured["mmlu_questions_per_s"] = r.get("questions_per_s")
        measured["mmlu_overhead_s"] = r.get("overhead_s")
    return {"estimated": {k: {mode: v[mode]["minutes"] for mode in ("partial", "full")} | ({"mmlu": v["mmlu"]["minutes"]} if "mmlu" in v else {}) for k, v in proj["models"].items()},
            "from_measured": measured_projection(proj, measured), "measured_inputs": measured, "smoke": bool(args.smoke),
            "tokens": {k: proj["tokens"][k] for k in ("real_tokens", "padded_tokens", "optimizer_steps", "micro_batches")},
            "mmlu_questions": proj["mmlu"].get("questions")}


def run_section(args) -> int:
    """Child: run one section, print its JSON."""
    s = settings(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fn = globals()[f"section_{args.section}"]
    print(json.dumps(fn(args, s)))
    return 0


# --------------------------------------------------------------------------- parent


def child(args, section: str, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", section, "--out", args.out] + (["--smoke"] if args.smoke else [])
    for flag, value in (("--device", args.device), ("--facts", args.facts), ("--rows", args.rows), ("--threads", args.threads)):
        if value:
            cmd += [flag, str(value)]
    cmd += ["--mmlu-limits", ",".join(map(str, args.mmlu_limits))]
    start = time.perf_counter()
    log = Path(args.out) / f"{section}.log"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"ok": False, "error": f"exit {proc.returncode}: " + " | ".join(tail), "seconds": round(time.perf_counter() - start, 1)}
        return {"ok": True, "result": last_json_line(proc.stdout), "seconds": round(time.perf_counter() - start, 1)}
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        log.write_text(out + err, encoding="utf-8")
        result = {"ok": False, "error": f"timed out after {timeout:.0f} s", "seconds": round(time.perf_counter() - start, 1)}
        try:  # a section that reports as it goes (mmlu) keeps what it had
            result.update(ok=True, partial=True, result=last_json_line(out))
        except ValueError:
            pass
        return result
    except Exception as exc:  # noqa: BLE001 - a section's failure must not end the check
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "detail": traceback.format_exc()[-500:], "seconds": round(time.perf_counter() - start, 1)}


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def why(r: dict) -> str:
    return "not run" if r.get("error") == "not run" else f"failed: {r.get('error')}"


def fmt(x, spec=".2f", unit=""):
    return "—" if x is None else f"{x:{spec}}{unit}"


def table(results: dict) -> list[str]:
    lines = ["| measurement | result |", "|---|---|"]
    results = {k: results.get(k, {"ok": False, "error": "not run"}) for k in SECTIONS}
    u = results.get("unlearn", {})
    if u.get("ok"):
        r = u["result"]
        for side, label in (("mlp", "layers 0-5 MLP"), ("full", "full fine-tuning")):
            lines.append(f"| unlearning, {label} | {fmt(r[f'tokens_per_s_{side}'], ',.0f')} tokens/s ({fmt(r[f'padded_tokens_per_s_{side}'], ',.0f')} incl. padding), "
                         f"step {fmt(r[f'step_time_s_{side}'], '.2f')} s, peak {r[f'peak_memory_bytes_{side}'] / 2**30:.2f} GiB, optimizer state {r[f'optimizer_bytes_{side}'] / 2**30:.2f} GiB |")
        lines.append(f"| unlearning ratios (0-5 MLP / full) | optimizer state {r['optimizer_bytes_ratio']:.3f}, peak memory {r['peak_memory_ratio']:.3f}, step time {r['step_time_ratio']:.3f} |")
    else:
        lines.append(f"| unlearning | {why(u)} |")
    t = results.get("trace", {})
    lines.append(f"| tracing (exact, samples {t['result']['samples']}, 3 kinds) | {t['result']['facts_per_s']:.2f} facts/s over {t['result']['facts']} facts "
                 f"(~{t['result']['tokens_mean']:.0f} tokens), setup {t['result']['setup_s']:.1f} s, suffix trick {t['result']['suffix']} |" if t.get("ok") else f"| tracing | {why(t)} |")
    e = results.get("eval", {})
    lines.append(f"| batched evaluation ({e['result']['max_new_tokens']} new tokens + NLL) | {e['result']['rows_per_s']:.2f} rows/s over {e['result']['rows']} rows, "
                 f"{e['result']['generated_tokens_per_s']:,.0f} generated tokens/s, batches {e['result']['batches']} |" if e.get("ok") else f"| batched evaluation | {why(e)} |")
    m = results.get("mmlu", {})
    if m.get("ok"):
        r = m["result"]
        runs = ", ".join(f"{x['questions']} q in {x['seconds']:.1f} s" for x in r["runs"])
        how = "marginal" if r.get("marginal") else "incl. lm-eval's fixed cost"
        lines.append(f"| MMLU (lm-eval, 0-shot) | {r['questions_per_s']:.1f} questions/s ({r['requests_per_s']:.1f} requests/s) {how}, fixed {r['overhead_s']:.1f} s ({runs}) |")
    else:
        lines.append(f"| MMLU | {why(m)} |")
    p = results.get("projection", {})
    if p.get("ok"):
        for name, est in p["result"]["estimated"].items():
            if name not in p["result"]["from_measured"]:
                mm = f", MMLU compute {est['mmlu'][0]:.1f}-{est['mmlu'][1]:.1f} min" if "mmlu" in est else ""
                lines.append(f"| estimated {name} (FLOP model, nothing measured) | unlearning 0-5 MLP {est['partial'][0]:.1f}-{est['partial'][1]:.1f} min, "
                             f"full {est['full'][0]:.1f}-{est['full'][1]:.1f} min{mm} |")
        for name, v in p["result"]["from_measured"].items():
            parts = []
            if "unlearn_partial_minutes" in v:
                parts.append(f"unlearning 0-5 MLP {v['unlearn_partial_minutes']:.1f} min")
            if "unlearn_full_minutes" in v:
                parts.append(f"full {v['unlearn_full_minutes']:.1f} min")
            if "mmlu_minutes" in v:
                parts.append(f"MMLU {v['mmlu_minutes']:.1f} min")
            note = " (smoke: the tiny model's rates, not OLMo-1B's — meaningless)" if p["result"]["smoke"] else ""
            lines.append(f"| projected {name} (8 epochs; full MMLU){note} | {', '.join(parts)} |")
    else:
        lines.append(f"| projection | {why(p)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "runs" / "gpu-check"), help="folder for gpu_check.json, per-section JSON and logs")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: test the whole check end to end in minutes")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="which sections, in order")
    p.add_argument("--budget", type=float, default=450, help="seconds for all sections together (each also has its own limit)")
    p.add_argument("--facts", type=int, default=8, help="tracing: facts timed (after one warm-up fact)")
    p.add_argument("--rows", type=int, default=64, help="evaluation: rows timed")
    p.add_argument("--mmlu-limits", default="1,10", type=lambda v: [int(x) for x in str(v).split(",")], help="MMLU: questions per subject of the two runs")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in the sections (0: torch's default; default 1 with --smoke, else torch's)")
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in OFFLINE.items():  # never reach for the Hub (set here, not on import); the sections inherit it
        os.environ.setdefault(key, value)
    if args.threads is None:
        args.threads = 1 if args.smoke else 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.section:
        return run_section(args)

    limits = {"unlearn": 170, "trace": 120, "eval": 100, "mmlu": 150, "projection": 90}
    if args.smoke:
        limits = {k: 2 * v for k, v in limits.items()}
    started = time.perf_counter()
    s = settings(args)
    gpu = gpu_name()
    print(f"gpu_check: {'SMOKE (CPU, tiny shapes)' if args.smoke else 'OLMo-1B-0724 shape, random weights, ' + s['dtype']} on {s['device']}; GPU: {gpu or 'none'}", flush=True)
    results = {}
    for section in [x.strip() for x in args.sections.split(",") if x.strip()]:
        left = args.budget - (time.perf_counter() - started)
        if left < 10:
            results[section] = {"ok": False, "error": "skipped: the time budget is spent"}
        else:
            results[section] = child(args, section, min(limits[section], left))
        (Path(args.out) / f"{section}.json").write_text(json.dumps(results[section], indent=1) + "\n", encoding="utf-8")
        state = "ok" if results[section]["ok"] else f"FAILED ({results[section]['error']})"
        print(f"  {section:10s} {state} [{results[section].get('seconds', 0):.0f} s]", flush=True)

    from bench_common import machine

    info = machine("cpu")
    info["gpu"] = gpu
    for section in ("unlearn",):  # the unlearning child saw the device
        if results.get(section, {}).get("ok"):
            info["device_seen"] = results[section]["result"].get("machine")
    print()
    print("\n".join(table(results)))
    summary = {
        "ok": all(r["ok"] for r in results.values()),
        "smoke": args.smoke,
        "device": s["device"],
        "machine": info,
        "seconds": round(time.perf_counter() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
        "unlearn_tokens_per_s_mlp": results.get("unlearn", {}).get("result", {}).get("tokens_per_s_mlp"),
        "unlearn_tokens_per_s_full": results.get("unlearn", {}).get("result", {}).get("tokens_per_s_full"),
        "unlearn_peak_gib_mlp": _gib(results, "peak_memory_bytes_mlp"),
        "unlearn_peak_gib_full": _gib(results, "peak_memory_bytes_full"),
        "trace_facts_per_s": results.get("trace", {}).get("result", {}).get("facts_per_s"),
        "eval_rows_per_s": results.get("eval", {}).get("result", {}).get("rows_per_s"),
        "mmlu_questions_per_s": results.get("mmlu", {}).get("result", {}).get("questions_per_s"),
        "projection": results.get("projection", {}).get("result", {}).get("from_measured"),
        "sections": {k: {"ok": v["ok"], "seconds": v.get("seconds"), **({"error": v["error"]} if not v["ok"] else {})} for k, v in results.items()},
    }
    (Path(args.out) / "gpu_check.json").write_text(json.dumps({"summary": summary, "results": results}, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def _gib(results: dict, key: str):
    v = results.get("unlearn", {}).get("result", {}).get(key)
    return round(v / 2**30, 3) if v else None


if __name__ == "__main__":
    sys.exit(main())
