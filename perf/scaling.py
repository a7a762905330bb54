"""How tracing and evaluation cost grow with prompt length, layer count and number of facts/rows.

    python perf/scaling.py                      # ~3 minutes on 2 cores; writes perf/img/scaling.png
    python perf/scaling.py --quick              # a few seconds per sweep (smoke test)
    python perf/scaling.py --png out.png --threads 2

Models are tiny randomly initialised OLMo-1B-0724-architecture models built here (``hidden 128``,
4 heads, MLP 512, the real 50,304-row vocabulary and OLMo-0724 tokenizer); cost does not depend
on what the weights know. Each sweep varies one size and holds the others at the base point
(prompt 16 tokens, 4 layers, 2 facts / 8 rows):

* **tracing** — exact causal tracing as ``tracing.trace_facts`` runs it (bridge booted once per
  model, the suffix trick when the KV-cache check passes, all three kinds, ``samples=10``,
  ``window=10``) on synthetic facts whose subject is tokens 1-3, so every later position is
  restored (a random model predicts nothing, so the known-facts filter is off). Prompt length
  and layers report seconds per fact (the per-fact loop only); facts report the whole
  ``trace_facts``-style run including the one-off bridge boot, so its exponent shows that cost
  amortising;
* **evaluation** — what ``amnesia evaluate`` does per row: batched greedy generation
  (``unlearn.generation.generate``, automatic batch size) plus the output NLL
  (``unlearn.eval.nll.completion_nll``), on prompts cut from the SemEval public inputs to the
  given length, ``--max-new-tokens`` new tokens (no EOS from a random model, so all are made).
  Near-tie reruns are off: a random model's top two logits are nearly always within the fp32
  margin, so nearly every row would be rerun alone, which measures the model, not the sizes.

The growth of each series is fitted as a power law ``cost = a · x^k`` by least squares on
log-log axes (``k`` and R² reported, and the local slope between the two largest sizes, which is
closer to the asymptotic growth when fixed costs flatten the small sizes); for facts also the straight line ``a + b·n`` (one-off cost
and cost per fact). What to expect: the tracer restores ``T`` positions × ``L`` layers and
runs each restoration through a suffix of up to ``T`` tokens and ``L`` layers, so per-fact work
grows like ``T²·L²`` in the limit (fixed per-forward costs flatten it at small sizes);
evaluation is dominated by the decoding steps, so prompt length matters little until it
approaches the number of new tokens. Ends with one JSON line of the exponents.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import OLMO_1B, ROOT, SEMEVAL, TOKENIZER, describe, emit, machine, olmo_config, olmo_tokenizer, random_olmo  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_PNG = ROOT / "perf" / "img" / "scaling.png"
FULL = {
    "trace_tokens": [8, 16, 32, 64],
    "trace_layers": [2, 4, 8, 12],
    "trace_facts": [1, 2, 4, 8],
    "eval_tokens": [16, 32, 64, 128, 256],
    "eval_layers": [2, 4, 8, 16],
    "eval_rows": [4, 8, 16, 32],
}
QUICK = {
    "trace_tokens": [8, 12, 16],
    "trace_layers": [2, 3, 4],
    "trace_facts": [1, 2, 3],
    "eval_tokens": [8, 16, 32],
    "eval_layers": [2, 3, 4],
    "eval_rows": [2, 4, 8],
}
BASE = {"tokens": 16, "layers": 4, "facts": 2, "rows": 8}


def model(layers: int, hidden: int, seed: int = 0):
    cfg = olmo_config(OLMO_1B, hidden=hidden, heads=4, layers=layers)
    m = random_olmo(cfg, seed=seed)
    m.eval()
    return m


# --------------------------------------------------------------------------- tracing


def synthetic_facts(tok, n: int, tokens: int, seed: int):
    """``n`` facts of ``tokens`` random ids, subject = tokens 1-3, answer = a random id."""
    from tracing.facts import Fact, FactSet, TokenizedFact

    gen = torch.Generator().manual_seed(seed)
    kept = []
    for i in range(n):
        ids = torch.randint(100, 50_000, (tokens + 1,), generator=gen).tolist()
        prompt, answer = ids[:tokens], ids[tokens]
        kept.append(TokenizedFact(Fact(tok.decode(prompt), tok.decode(prompt[1:4]), tok.decode([answer]), id=f"synthetic-{i}"),
                                  tuple(prompt), tuple(tok.convert_ids_to_tokens(prompt)), (1, min(4, tokens - 1)), answer, tok.decode([answer])))
    return FactSet(kept=kept)


def trace_cost(m, tok, facts, config) -> dict:
    """``trace_facts``' own steps, timed: boot + noise level + suffix check once, then every fact."""
    from tracing import bridged, draw_noise, embedding_std, trace_fact
    from tracing.bridge import suffix_cache_works
    from tracing.noise import parse_noise

    start = time.perf_counter()
    with bridged(m, tok, dtype=torch.float32) as bridge:
        level = parse_noise(config.noise)
        std = level.std(embedding_std(bridge, facts.kept) if level.relative else None)
        suffix = suffix_cache_works(bridge, m, torch.tensor(facts.kept[0].input_ids, device=next(m.parameters()).device))
        d_model = int(bridge.cfg.d_model)
        ready = time.perf_counter()
        for i, tf in enumerate(facts.kept):
            s, e = tf.subject_range
            trace_fact(bridge, m, tf, draw_noise(config.seed, i, config.samples, e - s, d_model, std), config, suffix=suffix, batch_rows=config.batch_size)
        done = time.perf_counter()
    end = time.perf_counter()
    return {"setup_s": (ready - start) + (end - done), "per_fact_s": (done - ready) / len(facts.kept), "total_s": end - start, "suffix": suffix}


# --------------------------------------------------------------------------- evaluation


def text_rows(tok, n: int, tokens: int, completion_tokens: int = 8) -> tuple[list[str], list[str]]:
    """``n`` prompts of about ``tokens`` tokens (and short completions) cut from SemEval public inputs."""
    stream: list[int] = []
    try:
        from unlearn.data import load_semeval

        data = load_semeval(SEMEVAL)
        for split in ("forget_train", "retain_train"):
            for r in data.splits[split]:
                stream.extend(tok(r["input"] + r["output"])["input_ids"])
                if len(stream) > n * (tokens + completion_tokens) + 64:
                    break
    except Exception:  # no shared data: any fixed text does for cost
        stream = tok(" ".join(["The quick brown fox jumps over the lazy dog."] * (n * (tokens + completion_tokens))))["input_ids"]
    prompts, completions, at = [], [], 0
    while len(prompts) < n:
        chunk = stream[at : at + tokens + completion_tokens]
        if len(chunk) < tokens + completion_tokens:
            at = 0
            stream = stream[1:] + stream[:1]
            continue
        prompts.append(tok.decode(chunk[:tokens]))
        completions.append(tok.decode(chunk[tokens:]))
        at += tokens + completion_tokens
    return prompts, completions


def eval_cost(m, tok, prompts, completions, max_new_tokens: int) -> dict:
    from unlearn.eval.nll import NLLOptions, completion_nll
    from unlearn.generation import GenerationOptions, generate

    start = time.perf_counter()
    gen = generate(m, tok, prompts, GenerationOptions(max_new_tokens=max_new_tokens, clean_up_spaces=True, tie_margin=None))
    completion_nll(m, tok, prompts, completions, NLLOptions())
    dt = time.perf_counter() - start
    return {"total_s": dt, "per_row_s": dt / len(prompts), "reruns": len(gen.reruns), "new_tokens": sum(gen.new_tokens)}


# --------------------------------------------------------------------------- fits and plot


def power_fit(x, y) -> dict:
    """``y = a · x^k`` by least squares on log-log axes; ``k_last`` is the slope between the two largest sizes."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    k, log_a = np.polyfit(lx, ly, 1)
    pred = log_a + k * lx
    ss = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1 - float(((ly - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    k_last = float((ly[-1] - ly[-2]) / (lx[-1] - lx[-2])) if len(lx) > 1 else float(k)
    return {"k": float(k), "a": float(np.exp(log_a)), "r2": r2, "k_last": k_last}


def line_fit(x, y) -> dict:
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return {"intercept_s": float(a), "slope_s": float(b)}


def plot(series: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("trace_tokens", "prompt tokens", "tracing: s per fact"),
        ("trace_layers", "layers", "tracing: s per fact"),
        ("trace_facts", "facts", "tracing: s per run (incl. boot)"),
        ("eval_tokens", "prompt tokens", "evaluation: s per row"),
        ("eval_layers", "layers", "evaluation: s per row"),
        ("eval_rows", "rows", "evaluation: s per run"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (key, xlabel, ylabel) in zip(axes.flat, panels):
        s = series[key]
        x, y = np.asarray(s["x"], float), np.asarray(s["y"], float)
        ax.loglog(x, y, "o", color="C0" if key.startswith("trace") else "C1")
        fx = np.geomspace(x.min(), x.max(), 50)
        ax.loglog(fx, s["fit"]["a"] * fx ** s["fit"]["k"], "-", color="0.4", label=f"fit ∝ x^{s['fit']['k']:.2f} (R² {s['fit']['r2']:.3f}); last step x^{s['fit']['k_last']:.2f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{int(v)}" for v in x])
        ax.minorticks_off()
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--png", default=str(DEFAULT_PNG), help="where the plot goes ('' = no plot)")
    p.add_argument("--quick", action="store_true", help="small sweeps (smoke test, seconds)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny models")
    p.add_argument("--samples", type=int, default=10, help="tracing noise samples per fact")
    p.add_argument("--window", type=int, default=10, help="tracing MLP/attention window")
    p.add_argument("--max-new-tokens", type=int, default=32, help="evaluation: new tokens per row")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default; 1 keeps a shared machine's noise down)")
    p.add_argument("--tokenizer", default=str(TOKENIZER))
    p.add_argument("--json-out", help="also write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tracing import TraceConfig

    sweeps = QUICK if args.quick else FULL
    samples = min(args.samples, 3) if args.quick else args.samples
    new_tokens = min(args.max_new_tokens, 8) if args.quick else args.max_new_tokens
    config = TraceConfig(samples=samples, window=args.window).check()
    tok = olmo_tokenizer(args.tokenizer)
    info = machine("cpu")
    print(f"tiny OLMo-1B-0724-architecture models: hidden {args.hidden}, 4 heads, random weights, fp32; tracing samples {samples}, window {args.window}, "
          f"all kinds; evaluation {new_tokens} new tokens; base point {BASE}")
    print(f"machine: {describe(info)}")
    started = time.perf_counter()

    # warm-up: first boot / first generate pay one-off import and allocator costs
    m = model(2, args.hidden)
    trace_cost(m, tok, synthetic_facts(tok, 1, 6, 99), TraceConfig(samples=2, window=args.window))
    eval_cost(m, tok, *text_rows(tok, 2, 8), 2)

    series: dict[str, dict] = {}

    def record(key: str, x: list, y: list, extra: list) -> None:
        series[key] = {"x": x, "y": y, "fit": power_fit(x, y), "points": extra}
        f = series[key]["fit"]
        cells = ", ".join(f"{a}: {b:.3g}" for a, b in zip(x, y))
        print(f"{key:13s} k = {f['k']:.2f} (R² {f['r2']:.3f}), between the two largest sizes {f['k_last']:.2f}   [{cells}]", flush=True)

    # tracing vs prompt length / layers: seconds per fact (bridge boot excluded)
    pts = [trace_cost(model(BASE["layers"], args.hidden), tok, synthetic_facts(tok, BASE["facts"], t, t), config) for t in sweeps["trace_tokens"]]
    record("trace_tokens", sweeps["trace_tokens"], [r["per_fact_s"] for r in pts], pts)
    pts = [trace_cost(model(l, args.hidden), tok, synthetic_facts(tok, BASE["facts"], BASE["tokens"], 1), config) for l in sweeps["trace_layers"]]
    record("trace_layers", sweeps["trace_layers"], [r["per_fact_s"] for r in pts], pts)
    # tracing vs facts: a whole run (boot included), one model
    m = model(BASE["layers"], args.hidden)
    pts = [trace_cost(m, tok, synthetic_facts(tok, n, BASE["tokens"], 2), config) for n in sweeps["trace_facts"]]
    record("trace_facts", sweeps["trace_facts"], [r["total_s"] for r in pts], pts)
    series["trace_facts"]["line"] = line_fit(sweeps["trace_facts"], [r["total_s"] for r in pts])

    # evaluation
    pts = [eval_cost(m, tok, *text_rows(tok, BASE["rows"], t), new_tokens) for t in sweeps["eval_tokens"]]
    record("eval_tokens", sweeps["eval_tokens"], [r["per_row_s"] for r in pts], pts)
    pts = []
    for l in sweeps["eval_layers"]:
        ml = model(l, args.hidden)
        eval_cost(ml, tok, *text_rows(tok, 2, 8), 2)  # warm-up of this model
        pts.append(eval_cost(ml, tok, *text_rows(tok, BASE["rows"], BASE["tokens"]), new_tokens))
    record("eval_layers", sweeps["eval_layers"], [r["per_row_s"] for r in pts], pts)
    pts = [eval_cost(m, tok, *text_rows(tok, n, BASE["tokens"]), new_tokens) for n in sweeps["eval_rows"]]
    record("eval_rows", sweeps["eval_rows"], [r["total_s"] for r in pts], pts)
    series["eval_rows"]["line"] = line_fit(sweeps["eval_rows"], [r["total_s"] for r in pts])

    line = series["trace_facts"]["line"]
    print(f"tracing a run of n facts ≈ {line['intercept_s']:.2f} s + n × {line['slope_s']:.3f} s; "
          f"evaluating n rows ≈ {series['eval_rows']['line']['intercept_s']:.2f} s + n × {series['eval_rows']['line']['slope_s']:.3f} s")
    elapsed = time.perf_counter() - started
    if args.png:
        plot(series, Path(args.png), f"cost growth, tiny random OLMo-architecture models (hidden {args.hidden}), {describe(info)}")
        print(f"plot: {args.png}")
    figures = {
        "trace_tokens_exponent": round(series["trace_tokens"]["fit"]["k"], 3),
        "trace_layers_exponent": round(series["trace_layers"]["fit"]["k"], 3),
        "trace_facts_exponent": round(series["trace_facts"]["fit"]["k"], 3),
        "eval_tokens_exponent": round(series["eval_tokens"]["fit"]["k"], 3),
        "eval_layers_exponent": round(series["eval_layers"]["fit"]["k"], 3),
        "eval_rows_exponent": round(series["eval_rows"]["fit"]["k"], 3),
        "r2": {k: round(v["fit"]["r2"], 4) for k, v in series.items()},
        "last_step_exponents": {k: round(v["fit"]["k_last"], 3) for k, v in series.items()},
        "trace_run_s": {"per_run": round(line["intercept_s"], 3), "per_fact": round(line["slope_s"], 4)},
        "eval_run_s": {"per_run": round(series["eval_rows"]["line"]["intercept_s"], 3), "per_row": round(series["eval_rows"]["line"]["slope_s"], 4)},
        "series": {k: {"x": v["x"], "y": [round(y, 5) for y in v["y"]]} for k, v in series.items()},
        "suffix": all(pt.get("suffix", True) for k in ("trace_tokens", "trace_layers", "trace_facts") for pt in series[k]["points"]),
        "png": args.png or None,
        "seconds": round(elapsed, 1),
        "quick": args.quick,
        "machine": info,
    }
    return emit(figures, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
