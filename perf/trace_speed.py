"""Batched causal tracing vs ROME's one-restoration-per-forward loop: same model, facts and noise.

    python perf/trace_speed.py                 # the fixture target (6 layers x 128), built once into runs/bench-trace
    python perf/trace_speed.py --shape real    # a 30-layer x 576 Llama (SmolLM-135M's config), random weights, ROME-style prompts
    python perf/trace_speed.py --shape real --arch olmo --device cuda
    python perf/trace_speed.py --model DIR --data DIR --facts 10

All sides run inside one booted TransformerBridge on the same facts with the same noise draws,
interleaved fact by fact (so a busy machine slows each side alike):
``tracing.reference.trace_fact_reference`` (ROME's loop: ``1 + samples`` rows of the full prompt
per restoration, every token and layer), ``tracing.tracer.trace_fact`` as ``amnesia trace`` runs
it (restorations batched, clean and corrupted runs once, only the tokens from the restored one on
and only the layers from the first restored one on), and the same without entering the stack
mid-way (``--no-skip-layers``, the tracer before layer skipping), and ``--method auto`` (the
attribution screen plus exact tracing at the last subject token, with the Spearman agreement of
the two there). Prints facts/s of each, the
ratios, the largest |ΔIE| against the reference, and the work in token·layer evaluations: the
reference's over ours (``work_ratio``) and over the FLOP bound of reusing the corrupted run in
both directions, tokens before and layers before each restoration (``bound_ratio``, → 4 for long
prompts and deep models). Ends with one JSON line.

``--shape real`` has the shape of a real small model (SmolLM-135M: 30 layers × 576, 9 heads, 3
key/value heads; ``--arch olmo`` the same dimensions as an OLMo) with random weights, initialised
with ``--init-std`` (0.1: peaked enough next-token distributions that the restored
probabilities, and so |ΔIE|, are not all ~1/vocabulary) and ROME known-facts-style prompts, the
answer being the model's own greedy next token, as ROME does for a prompt. Speed does not depend
on the weights; exactness on trained weights is what the tests check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))

from bench_common import CONFIGS, add_fixture_arguments, describe, emit, fixture_paths, machine, olmo_tokenizer  # noqa: E402

from tracing import TraceConfig, bridged, draw_noise, embedding_std, facts_from_rows, prepare_facts, restored_layers, trace_fact, trace_fact_reference  # noqa: E402
from tracing.bridge import suffix_cache_works  # noqa: E402
from tracing.facts import Fact, greedy_next_tokens, tokenize_fact  # noqa: E402
from tracing.stack import stack_entry_works  # noqa: E402
from tracing.aggregation import agreement  # noqa: E402
from tracing.attribution import auto_trace_fact  # noqa: E402
from tracing.driver import confirm_positions, screen_work  # noqa: E402
from tracing.tracer import fact_work  # noqa: E402

SMOLLM = CONFIGS / "smollm-135m.json"
#: ROME known-facts-style prompts (subject, relation prompt): 9-14 tokens with the OLMo tokenizer.
ROME_PROMPTS = [
    ("The Eiffel Tower", "The Eiffel Tower is located in the city of"),
    ("Danielle Darrieux", "The mother tongue of Danielle Darrieux is"),
    ("Toko Yasuda", "Toko Yasuda, who plays the instrument called the"),
    ("Autonomous University of Madrid", "Autonomous University of Madrid, which is located in the country of"),
    ("Thomas Joannes Stieltjes", "Thomas Joannes Stieltjes was born in the city of"),
    ("Apple A5", "Apple A5 was created by the company called"),
    ("Edwin of Northumbria", "Edwin of Northumbria follows the religion of"),
    ("Kuala Langat", "Kuala Langat is located in the country of"),
]


def reference_work(tf, n_layers: int, config: TraceConfig) -> int:
    """Token·layer evaluations of ROME's loop: clean and corrupted runs, then every (kind, t, l) as ``1 + S`` full rows."""
    T, L, S = len(tf.input_ids), n_layers, config.samples
    return T * L + (1 + S) * T * L + len(config.kinds) * T * L * (1 + S) * T * L


def bound_work(tf, n_layers: int, config: TraceConfig) -> int:
    """The FLOP bound: the base runs, then every restoration on the corrupted rows only, from its
    token and its first restored layer on (``S · (T - t) · (L - first layer)``)."""
    T, L, S = len(tf.input_ids), n_layers, config.samples
    total = (1 + S) * T * L
    for kind in config.kinds:
        for t in range(T):
            for layer in range(L):
                total += S * (T - t) * (L - restored_layers(kind, layer, L, config.window)[0])
    return total


#: Assumed effective float32 throughput of a data-centre GPU for the projection (30 % of an
#: H100's 67 TFLOP/s without tensor cores; tracing runs in float32). An assumption, not measured.
GPU_FP32_TFLOPS = 20.0
PROJECTED = {"OLMo-1B-0724": CONFIGS / "olmo-1b-0724.json", "OLMo-7B-0724-Instruct": CONFIGS / "olmo-7b-0724-instruct.json"}


def layer_flops(config) -> float:
    """Forward FLOPs per token per decoder layer: 2 × its weight-matrix parameters (attention and MLP)."""
    d, f = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    d_kv = kv * (d // heads)
    return 2.0 * (2 * d * d + 2 * d * d_kv + 3 * d * f)


def projection(flops_per_s: float, tokens: int, config: TraceConfig, method: str) -> dict:
    """Seconds per fact for OLMo-1B/7B: their token·layer work (a ``tokens``-token prompt, a 3-token
    subject ending 4 tokens before the end) × FLOPs per token·layer, at ``flops_per_s`` (this CPU,
    measured) and at :data:`GPU_FP32_TFLOPS` (assumed)."""
    from types import SimpleNamespace

    from bench_common import olmo_config

    fact = SimpleNamespace(input_ids=[0] * tokens, subject_range=(max(0, tokens - 7), max(1, tokens - 4)))
    out = {}
    for name, path in PROJECTED.items():
        cfg = olmo_config(path)
        L, per = cfg.num_hidden_layers, layer_flops(cfg)
        positions = None if method == "exact" else confirm_positions(fact, config.confirm)
        work = fact_work(fact, L, config, suffix=True, skip_layers=True, positions=positions)
        if method == "auto":
            work += screen_work(tokens, L, config.samples)
        flops = work * per
        out[name] = {"layers": L, "token_layers": work, "cpu_s": round(flops / flops_per_s, 1), "gpu_floor_s": round(flops / (GPU_FP32_TFLOPS * 1e12), 2)}
    return out


def real_model(args):
    """A randomly initialised model of a real small model's shape, and the OLMo tokenizer."""
    import transformers

    raw = json.loads(SMOLLM.read_text(encoding="utf-8"))
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "model_type")}
    tok = olmo_tokenizer()
    raw.update(vocab_size=len(tok), initializer_range=args.init_std, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if args.layers:
        raw["num_hidden_layers"] = args.layers
    if args.hidden:
        raw.update(hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3, num_attention_heads=max(1, args.hidden // 64), num_key_value_heads=max(1, args.hidden // 192))
    if args.arch == "olmo":
        keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                "rope_theta", "initializer_range", "vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")
        config = transformers.OlmoConfig(**{k: raw[k] for k in keep})
    else:
        config = transformers.LlamaConfig(**raw)
    torch.manual_seed(args.seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    return model.to(device=args.device, dtype=getattr(torch, args.dtype)), tok


def real_facts(model, tok, n: int):
    """ROME-style prompts with the model's own next token as the answer."""
    out = []
    for subject, prompt in (ROME_PROMPTS * (1 + n // len(ROME_PROMPTS)))[:n]:
        probe = tokenize_fact(tok, Fact(prompt, subject, "?"))
        answer = greedy_next_tokens(model, [probe.input_ids])[0]
        out.append(tokenize_fact(tok, Fact(prompt, subject, tok.decode([answer])), answer_id=answer))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shape", choices=("fixture", "real"), default="fixture", help="fixture: the tiny trained target; real: a 30-layer x 576 model with random weights")
    p.add_argument("--arch", choices=("llama", "olmo"), default="llama", help="--shape real: the architecture (same dimensions either way)")
    p.add_argument("--layers", type=int, default=None, help="--shape real: override the layer count (30)")
    p.add_argument("--hidden", type=int, default=None, help="--shape real: override the width (576; MLP 8/3 of it, 64-wide heads)")
    p.add_argument("--init-std", type=float, default=0.1, help="--shape real: std of the random initialisation")
    add_fixture_arguments(p, "runs/bench-trace", "SemEval-layout data the facts come from (--shape fixture)")
    p.add_argument("--facts", type=int, default=None, help="facts to trace (default 6 on the fixture, 2 on the real shape)")
    p.add_argument("--samples", type=int, default=10, help="noise samples per fact")
    p.add_argument("--window", type=int, default=10, help="ROME's MLP/attention window")
    p.add_argument("--kinds", default="hidden,mlp,attn", help="kinds traced")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="model dtype (exactness is checked in float32)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="noise and weight seed")
    p.add_argument("--project-tokens", type=int, default=16, help="prompt length of the OLMo-1B/7B per-fact projection")
    p.add_argument("--json-out", default=None, help="also write the JSON line to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = TraceConfig(kinds=tuple(args.kinds.split(",")), samples=args.samples, window=args.window, seed=args.seed).check()
    if args.shape == "real":
        model, tok = real_model(args)
        kept = real_facts(model, tok, args.facts or 2)
        where = f"random {args.arch} {model.config.num_hidden_layers} layers x {model.config.hidden_size}"
    else:
        from unlearn.data import load_semeval
        from unlearn.models import ModelOptions, load_model

        data_dir, model_dir = fixture_paths(args)
        model, tok = load_model(model_dir, ModelOptions(device=args.device, dtype=args.dtype))
        facts, _ = facts_from_rows(load_semeval(data_dir).get("forget", "train"))
        kept = prepare_facts(model, tok, facts).kept[: args.facts or 6]
        where = str(model_dir)
    info = machine(args.device)
    print(f"{where}: {len(kept)} facts of {min(len(t.input_ids) for t in kept)}-{max(len(t.input_ids) for t in kept)} tokens, "
          f"{len(config.kinds)} kinds, samples {config.samples}, window {config.window}; {describe(info)}")

    with bridged(model, tok, dtype=torch.float32 if args.dtype == "float32" else None) as bridge:
        n_layers, d_model = int(bridge.cfg.n_layers), int(bridge.cfg.d_model)
        first = torch.tensor(kept[0].input_ids, device=args.device)
        suffix, skip = suffix_cache_works(bridge, model, first), stack_entry_works(bridge, model, first)
        std = 3 * embedding_std(bridge, kept)
        noises = [draw_noise(config.seed, i, config.samples, tf.subject_range[1] - tf.subject_range[0], d_model, std) for i, tf in enumerate(kept)]
        trace_fact(bridge, model, kept[0], noises[0], config, suffix=suffix, skip_layers=skip)  # warm-up

        def timed(fn):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return out, time.perf_counter() - start

        def auto(tf, n):
            return auto_trace_fact(bridge, model, tf, n, config, confirm_positions(tf, config.confirm), suffix=suffix, skip_layers=skip)

        runs = {
            "ours": lambda tf, n: trace_fact(bridge, model, tf, n, config, suffix=suffix, skip_layers=skip),
            "auto": auto,
            "no_skip": lambda tf, n: trace_fact(bridge, model, tf, n, config, suffix=suffix, skip_layers=False),
            "reference": lambda tf, n: trace_fact_reference(bridge, tf, n, config),
        }
        out = {name: [] for name in runs}
        seconds = dict.fromkeys(runs, 0.0)
        for tf, noise in zip(kept, noises):  # interleaved per fact, so a busy machine slows all alike
            for name, fn in runs.items():
                trace, dt = timed(lambda: fn(tf, noise))
                out[name].append(trace)
                seconds[name] += dt
            print(f"  fact {len(out['ours'])}/{len(kept)}: " + ", ".join(f"{k} {seconds[k]:.1f} s" for k in runs), flush=True)

    def max_diff(a_runs, b_runs):
        return max(float(np.abs(a.ie[k] - b.ie[k]).max()) for a, b in zip(a_runs, b_runs) for k in config.kinds)

    diff, diff_no_skip = max_diff(out["ours"], out["reference"]), max_diff(out["no_skip"], out["reference"])
    scale = max(float(np.abs(t.ie[k]).max()) for t in out["reference"] for k in config.kinds)
    w_ref = sum(reference_work(tf, n_layers, config) for tf in kept)
    w_ours = sum(fact_work(tf, n_layers, config, suffix=suffix, skip_layers=skip) for tf in kept)
    w_no_skip = sum(fact_work(tf, n_layers, config, suffix=suffix, skip_layers=False) for tf in kept)
    w_bound = sum(bound_work(tf, n_layers, config) for tf in kept)
    n = len(kept)
    fps = {k: n / v for k, v in seconds.items()}
    ratio, ratio_no_skip = fps["ours"] / fps["reference"], fps["no_skip"] / fps["reference"]
    print(f"suffix trick verified: {suffix}; entering mid-stack verified: {skip}")
    print(f"reference (ROME loop)       : {fps['reference']:8.4f} facts/s ({seconds['reference']:.1f} s)")
    print(f"batched, every layer        : {fps['no_skip']:8.4f} facts/s ({seconds['no_skip']:.1f} s), x{ratio_no_skip:.2f}, work x{w_ref / w_no_skip:.2f}, max |dIE| {diff_no_skip:.2e}")
    print(f"batched + layer skip (ours) : {fps['ours']:8.4f} facts/s ({seconds['ours']:.1f} s), x{ratio:.2f}, work x{w_ref / w_ours:.2f}, max |dIE| {diff:.2e}")
    print(f"FLOP bound (tokens and layers before each restoration reused): work x{w_ref / w_bound:.2f}; "
          f"measured x{ratio:.2f} = {ratio / (w_ref / w_bound):.2f} of it (largest |IE| {scale:.3g})")
    agree = agreement(out["auto"])
    auto_diff = max(float(np.abs(a.ie[k][a.exact_positions] - b.ie[k][a.exact_positions]).max()) for a, b in zip(out["auto"], out["reference"]) for k in config.kinds)
    print(f"method auto                 : {fps['auto']:8.4f} facts/s ({seconds['auto']:.1f} s), x{fps['auto'] / fps['reference']:.2f}; exact at the last subject token "
          f"(max |dIE| {auto_diff:.2e}); Spearman of the screen's per-layer curves with exact tracing there: "
          + ", ".join(f"{k} AIE {a['aie'] if a['aie'] is None else round(a['aie'], 3)}, per fact {a['per_fact'] if a['per_fact'] is None else round(a['per_fact'], 3)}" for k, a in agree.items()))
    per_layer = layer_flops(model.config)
    rate = w_ours * per_layer / seconds["ours"]  # FLOP/s our tracer reached (weight matmuls only)
    rate_ref = w_ref * per_layer / seconds["reference"]
    print(f"weight-matmul throughput: ours {rate / 1e9:.1f} GFLOP/s, reference {rate_ref / 1e9:.1f} GFLOP/s")
    projected = {m: projection(rate, args.project_tokens, config, m) for m in ("exact", "auto")}
    for m, rows in projected.items():
        print(f"projected seconds per fact, {m} ({args.project_tokens}-token prompt): " + "; ".join(
            f"{name} {r['cpu_s']:.0f} s here, {r['gpu_floor_s']:.2f} s FLOP floor at an assumed {GPU_FP32_TFLOPS:.0f} TFLOP/s GPU" for name, r in rows.items()))
    figures = {
        "facts_per_s": round(fps["ours"], 5),
        "facts_per_s_reference": round(fps["reference"], 5),
        "facts_per_s_no_skip": round(fps["no_skip"], 5),
        "facts_per_s_auto": round(fps["auto"], 5),
        "auto_agreement": agree,
        "auto_max_abs_diff": auto_diff,
        "ratio": round(ratio, 3),
        "ratio_no_skip": round(ratio_no_skip, 3),
        "work_ratio": round(w_ref / w_ours, 3),
        "work_ratio_no_skip": round(w_ref / w_no_skip, 3),
        "bound_ratio": round(w_ref / w_bound, 3),
        "ratio_over_bound": round(ratio / (w_ref / w_bound), 3),
        "max_abs_diff": diff,
        "max_abs_ie": scale,
        "gflops": round(rate / 1e9, 2),
        "gflops_reference": round(rate_ref / 1e9, 2),
        "projection": projected,
        "suffix": suffix,
        "skip_layers": skip,
        "shape": args.shape if args.shape == "fixture" else f"{args.arch}-{n_layers}x{d_model}",
        "n_layers": n_layers,
        "d_model": d_model,
        "tokens": [len(t.input_ids) for t in kept],
        "facts": n,
        "samples": config.samples,
        "window": config.window,
        "device": args.device,
        "machine": info,
    }
    return emit(figures, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
