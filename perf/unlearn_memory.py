"""One unlearning step, layers 0-5 MLP trainable vs full fine-tuning: step time, peak memory, optimizer state.

    python perf/unlearn_memory.py                     # CPU: OLMo-1B-0724's architecture shrunk 8x in width (16 layers)
    python perf/unlearn_memory.py --hidden-override 0 --vocab-override 0 --device cuda --bf16 --batch-size 12 --grad-accum 10 --max-length 512
                                                            # the real OLMo-1B-0724 shape on a GPU (random weights)

Both sides run the project's own code path, ``unlearn.api.train_unlearning`` with the default
method (``sha256``: one forward over the joint forget + retain micro-batch, ``−CE_f + α·CE_r``)
through ``UnlearnTrainer`` (AdamW over the trainable parameters only), on the same randomly
initialised model (same seed), the same SemEval public rows (real OLMo-0724 tokenizer) in the same order, the same batch
size, accumulation and ``max_length``:

* ``mlp``: ``layers 0-5, kind mlp`` — ``unlearn.params.select_parameters``, the paper's setting;
* ``full``: every parameter trainable (embeddings and LM head too).

The CPU default shrinks OLMo-1B-0724's width 8× (hidden 256, MLP 1024, 16 heads of 16) and its
vocabulary by the same factor (6,272 rows; token ids are taken modulo that size in the collator),
so embeddings, attention and MLPs keep the full model's parameter shares (layers 0-5 MLP: 23.6 %
of the parameters, as at full size) while a step takes seconds on 2 cores.

Each run of a side is its own fresh process (so peak memory is that side's alone): one warm-up
step, then ``--steps`` timed optimizer steps. Measured per side:

* step time: wall time from the Trainer's ``on_step_begin`` to ``on_step_end`` (forward,
  backward, clipping, AdamW step; CUDA synchronised), median over the timed steps of all runs
  (``--rounds`` runs per side in ABBA order); the process CPU time of the same span is printed
  beside it (on a shared CPU it is less disturbed by other processes than wall time);
* peak memory: CUDA ``torch.cuda.max_memory_allocated`` over the timed steps; on CPU the
  process's peak RSS (``ru_maxrss``) minus its RSS just before the model was built — the
  memory the model, its training state and the step's activations took from the OS;
* training-state bytes: parameters + gradients + optimizer state tensors, summed exactly;
* optimizer state bytes: every tensor in ``optimizer.state`` (AdamW: ``exp_avg``, ``exp_avg_sq``, ``step``);
* tokens/s: the non-padding tokens of the forget and retain rows of a step over its time.

Also prints the exact parameter counts of the full OLMo-1B-0724 and OLMo-7B-0724 configs (meta
device, nothing allocated): the optimizer-state ratio at full size, which a shrunk model only
approximates. Ends with one JSON line (``optimizer_bytes_ratio``, ``peak_memory_ratio``,
``step_time_ratio``, tokens/s of each side, ...).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import OLMO_1B, OLMO_7B, ROOT, SEMEVAL, TOKENIZER, describe, emit, last_json_line, machine, olmo_config, olmo_tokenizer, peak_rss_bytes, random_olmo, rss_bytes  # noqa: E402

SIDES = ("mlp", "full")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=str(OLMO_1B), help="HF config.json of the architecture")
    p.add_argument("--hidden-override", type=int, default=256, help="shrink hidden size to this (MLP keeps the config's ratio); 0 = the config's own")
    p.add_argument("--layers-override", type=int, default=0, help="layer count; 0 = the config's own (16 for OLMo-1B)")
    p.add_argument("--vocab-override", type=int, default=-1,
                   help="vocabulary rows of the embedding and LM head; -1 = shrunk by the same factor as hidden (keeps the full model's parameter shares), 0 = the config's own")
    p.add_argument("--tokenizer", default=str(TOKENIZER), help="tokenizer folder (the real OLMo-0724 one)")
    p.add_argument("--data", default=str(SEMEVAL), help="SemEval-layout data (forget_train / retain_train rows)")
    p.add_argument("--layers", default="0-5", help="trainable layers of the 'mlp' side")
    p.add_argument("--kind", default="mlp", help="trainable block of those layers")
    p.add_argument("--batch-size", type=int, default=4, help="forget rows per micro-batch (+ as many retain rows)")
    p.add_argument("--grad-accum", type=int, default=2, help="micro-batches per optimizer step")
    p.add_argument("--max-length", type=int, default=128, help="tokens per row (longer rows are cut)")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per side (after one warm-up step)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", help="weights' dtype: float32 (master weights, the project's default) or bfloat16")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (UnlearnConfig.bf16, what --bf16 does on GPUs)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--group-by-length", action="store_true", help="UnlearnConfig.group_by_length: length-sorted micro-batches within each step")
    p.add_argument("--sides", default="mlp,full", help="which sides to run, in this order")
    p.add_argument("--rounds", type=int, default=2,
                   help="runs per side, in ABBA order (mlp, full, full, mlp, ...) so load that drifts during the run hits both sides alike; medians over all runs' steps")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default); 1 by default: on a shared 2-core machine two OpenMP threads stall behind other processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=600, help="seconds per side")
    p.add_argument("--json-out", help="also write the final JSON here")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    return p


# --------------------------------------------------------------------------- one side (child process)


def model_config(args):
    """The benchmarked architecture: ``--config`` with the overrides applied."""
    full = olmo_config(args.config)
    vocab = args.vocab_override
    if vocab < 0:
        vocab = 0 if not args.hidden_override else max(64, 64 * round(full.vocab_size * args.hidden_override / full.hidden_size / 64))
    return olmo_config(args.config, layers=args.layers_override or None, hidden=args.hidden_override or None, vocab=vocab or None, max_positions=max(args.max_length, 256))


def run_side(args) -> dict:
    import torch

    import unlearn.api as api
    from unlearn.data import load_semeval
    from unlearn.dataset import PairedCollator
    from unlearn.params import ParameterSelection, count_parameters as count_trainable

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    side = args.worker
    tok = olmo_tokenizer(args.tokenizer)
    data = load_semeval(args.data)
    forget, retain = data.get("forget", "train"), data.get("retain", "train")
    cfg = model_config(args)
    vocab = cfg.vocab_size

    # Collated batches in order: step i holds batches i*accum .. (i+1)*accum-1.
    batches: list[dict] = []

    class CountingCollator(PairedCollator):
        def __call__(self, items):
            batch = super().__call__(items)
            if vocab < len(tok):  # a shrunk vocabulary: fold the real token ids into it (labels' -100 stays)
                for key in [k for k in batch if k.endswith("_input_ids") or k.endswith("_labels")]:
                    batch[key] = torch.where(batch[key] >= 0, batch[key] % vocab, batch[key])
            real = sum(int(batch[f"{h}_attention_mask"].sum()) for h in ("forget", "retain") if f"{h}_attention_mask" in batch)
            f, r = batch["forget_input_ids"], batch.get("retain_input_ids")
            padded = f.size(0) * max(f.size(1), r.size(1) if r is not None else 0) + (r.size(0) * max(f.size(1), r.size(1)) if r is not None else 0)
            if "epoch" in batch:  # a training batch (the forget rows watched before and after training are collated too)
                batches.append({"tokens": real, "padded": padded})
            return batch

    def select_all(model, layers, kind):
        """Full fine-tuning: every parameter trains (embeddings, norms and LM head included)."""
        for p in model.parameters():
            p.requires_grad_(True)
        trainable, total = count_trainable(model)
        return ParameterSelection(list(layers), "full", ["(all)"], trainable, total, tensors=[n for n, _ in model.named_parameters()])

    saved = api.PairedCollator, api.select_parameters
    api.PairedCollator = CountingCollator  # count what each step saw; the collation itself is unchanged
    if side == "full":
        api.select_parameters = select_all
    try:
        return _train_and_measure(args, api, cfg, tok, forget, retain, batches, cuda, side)
    finally:
        api.PairedCollator, api.select_parameters = saved


def _train_and_measure(args, api, cfg, tok, forget, retain, batches: list, cuda: bool, side: str) -> dict:
    import torch
    from transformers import TrainerCallback

    from unlearn.config import UnlearnConfig

    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    base_rss = rss_bytes()
    model = random_olmo(cfg, seed=args.seed, dtype=getattr(torch, args.dtype), device=args.device)
    model.train()
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    meter = {"times": [], "cpu_times": [], "peaks": [], "grad_bytes": 0, "opt_bytes": 0, "step": 0}
    warmup = 1

    class StepMeter(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            meter["t0"], meter["c0"] = time.perf_counter(), time.process_time()

        def on_pre_optimizer_step(self, a, state, control, model=None, **kw):
            meter["grad_bytes"] = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)

        def on_step_end(self, a, state, control, optimizer=None, **kw):
            if cuda:
                torch.cuda.synchronize()
            dt, dc = time.perf_counter() - meter["t0"], time.process_time() - meter["c0"]
            meter["step"] += 1
            if meter["step"] > warmup:
                meter["times"].append(dt)
                meter["cpu_times"].append(dc)
                if cuda:
                    meter["peaks"].append(torch.cuda.max_memory_allocated())
            opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
            meter["opt_bytes"] = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if torch.is_tensor(t))

    config = UnlearnConfig(
        method="sha256",
        layers=args.layers,
        kind=args.kind,
        max_steps=warmup + args.steps,
        lr=1.5e-5,  # the paper's: a step's memory and time do not depend on the rate (no step-size probe to measure)
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        group_by_length=args.group_by_length,
        logging_steps=10**6,
        seed=args.seed,
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "rows longer than max_length were truncated"
        run = api.train_unlearning(model, tok, forget, retain, config, callbacks=[StepMeter()], progress=False, device=args.device)
    sel = run.report["parameters"]
    steps = [batches[i * args.grad_accum : (i + 1) * args.grad_accum] for i in range(warmup, warmup + args.steps)]
    tokens = [sum(b["tokens"] for b in s) for s in steps]
    padded = [sum(b["padded"] for b in s) for s in steps]
    step_time = statistics.median(meter["times"])
    if cuda:
        peak = max(meter["peaks"])
        peak_kind = "torch.cuda.max_memory_allocated"
    else:
        peak = peak_rss_bytes() - base_rss
        peak_kind = "peak RSS - RSS before the model"
    out = {
        "side": side,
        "trainable_parameters": sel["trainable_parameters"],
        "total_parameters": sel["total_parameters"],
        "step_time_s": step_time,
        "step_times_s": [round(t, 4) for t in meter["times"]],
        "step_cpu_times_s": [round(t, 4) for t in meter["cpu_times"]],
        "tokens_per_step": statistics.mean(tokens),
        "padded_tokens_per_step": statistics.mean(padded),
        "tokens_per_s": sum(tokens) / sum(meter["times"]),
        "padded_tokens_per_s": sum(padded) / sum(meter["times"]),
        "peak_memory_bytes": int(peak),
        "peak_memory_measure": peak_kind,
        "weights_bytes": weights_bytes,
        "gradient_bytes": meter["grad_bytes"],
        "optimizer_bytes": meter["opt_bytes"],
        "training_state_bytes": weights_bytes + meter["grad_bytes"] + meter["opt_bytes"],
        "stopped": run.report["stopped"],
    }
    del run, model
    return out


# --------------------------------------------------------------------------- both sides (parent)


def merge(runs: list[dict]) -> dict:
    """One side's runs together: medians over every timed step, the largest peak."""
    out = dict(runs[0])
    times = [t for r in runs for t in r["step_times_s"]]
    cpu = [t for r in runs for t in r["step_cpu_times_s"]]
    out["step_times_s"], out["step_cpu_times_s"] = times, cpu
    out["step_time_s"] = statistics.median(times)
    out["step_cpu_time_s"] = statistics.median(cpu)
    out["tokens_per_s"] = statistics.mean(r["tokens_per_step"] for r in runs) / out["step_time_s"]
    out["padded_tokens_per_s"] = statistics.mean(r["padded_tokens_per_step"] for r in runs) / out["step_time_s"]
    out["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in runs)
    out["peak_memory_bytes_runs"] = [r["peak_memory_bytes"] for r in runs]
    out["runs"] = len(runs)
    return out


def child_argv(argv: list[str], side: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", side]


def run_child(argv: list[str], side: str, timeout: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(child_argv(argv, side), capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"side {side} failed (exit {proc.returncode}):\n{tail}")
    result = last_json_line(proc.stdout)
    result["process_s"] = round(time.perf_counter() - start, 1)
    return result


def full_size_shares(layers: str, kind: str) -> dict:
    """Exact trainable shares of the real OLMo-1B/7B configs (``select_parameters`` on a meta-device model)."""
    import torch
    from transformers import OlmoForCausalLM

    from unlearn.params import parse_layers, resolve_kind, select_parameters

    out = {}
    for name, path in (("olmo-1b-0724", OLMO_1B), ("olmo-7b-0724-instruct", OLMO_7B)):
        cfg = olmo_config(path)
        with torch.device("meta"):  # shapes only, nothing allocated
            model = OlmoForCausalLM(cfg)
        spec = parse_layers(layers, cfg.num_hidden_layers)
        sel = select_parameters(model, spec.layers, resolve_kind(kind, spec))
        out[name] = {"total_parameters": sel.total, "trainable_parameters": sel.trainable, "optimizer_bytes_ratio": sel.trainable / sel.total}
    return out


def gib(x: float) -> str:
    return f"{x / 2**30:.3f} GiB" if x >= 2**30 else f"{x / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.worker:
        print(json.dumps(run_side(args)))
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if sorted(sides) != sorted(SIDES):
        raise SystemExit(f"--sides {args.sides}: expected both of {', '.join(SIDES)} in some order")
    info = machine(args.device)
    cfg = model_config(args)
    print(f"model: {Path(args.config).name} with {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, MLP {cfg.intermediate_size}, "
          f"vocab {cfg.vocab_size} (random weights, {args.dtype}{', bf16 autocast' if args.bf16 else ''}) on {args.device}")
    print(f"batch: {args.batch_size} forget + {args.batch_size} retain rows × {args.grad_accum} accumulation, max_length {args.max_length}{', length-grouped' if args.group_by_length else ''}; "
          f"1 warm-up + {args.steps} timed steps per run, {args.rounds} run(s) per side in ABBA order, each run in its own process")
    print(f"machine: {describe(info)}")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            runs[side].append(run_child(argv, side, args.timeout))
    results = {side: merge(rs) for side, rs in runs.items()}
    m, f = results["mlp"], results["full"]

    rows = [
        ("trainable parameters", lambda r: f"{r['trainable_parameters']:,} ({100 * r['trainable_parameters'] / r['total_parameters']:.1f}%)"),
        ("step time (median)", lambda r: f"{r['step_time_s']:.3f} s"),
        ("step CPU time (median)", lambda r: f"{r['step_cpu_time_s']:.3f} s"),
        ("tokens/s", lambda r: f"{r['tokens_per_s']:.1f}"),
        ("peak memory", lambda r: gib(r["peak_memory_bytes"])),
        ("training-state bytes", lambda r: gib(r["training_state_bytes"])),
        ("gradient bytes", lambda r: gib(r["gradient_bytes"])),
        ("optimizer state bytes", lambda r: gib(r["optimizer_bytes"])),
    ]
    ratio = {
        "step time (median)": m["step_time_s"] / f["step_time_s"],
        "step CPU time (median)": m["step_cpu_time_s"] / f["step_cpu_time_s"],
        "tokens/s": m["tokens_per_s"] / f["tokens_per_s"],
        "peak memory": m["peak_memory_bytes"] / f["peak_memory_bytes"],
        "training-state bytes": m["training_state_bytes"] / f["training_state_bytes"],
        "gradient bytes": m["gradient_bytes"] / max(1, f["gradient_bytes"]),
        "optimizer state bytes": m["optimizer_bytes"] / f["optimizer_bytes"],
        "trainable parameters": m["trainable_parameters"] / f["trainable_parameters"],
    }
    print(f"\n| | layers {args.layers} {args.kind} | full fine-tuning | ratio |\n|---|---|---|---|")
    for label, fmt in rows:
        print(f"| {label} | {fmt(m)} | {fmt(f)} | {ratio[label]:.3f} |")
    print(f"(peak memory: {m['peak_memory_measure']}; tokens per step {m['tokens_per_step']:.0f} real, {m['padded_tokens_per_step']:.0f} with padding)")
    shares = full_size_shares(args.layers, args.kind)
    for name, s in shares.items():
        print(f"{name}: {s['trainable_parameters']:,} of {s['total_parameters']:,} parameters trainable -> optimizer state ratio {s['optimizer_bytes_ratio']:.3f} at full size")

    figures = {
        "optimizer_bytes_ratio": round(ratio["optimizer state bytes"], 4),
        "peak_memory_ratio": round(ratio["peak memory"], 4),
        "step_time_ratio": round(ratio["step time (median)"], 4),
        "tokens_per_s_mlp": round(m["tokens_per_s"], 2),
        "tokens_per_s_full": round(f["tokens_per_s"], 2),
        "padded_tokens_per_s_mlp": round(m["padded_tokens_per_s"], 2),
        "padded_tokens_per_s_full": round(f["padded_tokens_per_s"], 2),
        "training_state_ratio": round(ratio["training-state bytes"], 4),
        "step_time_s_mlp": round(m["step_time_s"], 4),
        "step_time_s_full": round(f["step_time_s"], 4),
        "step_cpu_time_ratio": round(ratio["step CPU time (median)"], 4),
        "peak_memory_bytes_mlp": m["peak_memory_bytes"],
        "peak_memory_bytes_full": f["peak_memory_bytes"],
        "optimizer_bytes_mlp": m["optimizer_bytes"],
        "optimizer_bytes_full": f["optimizer_bytes"],
        "peak_memory_measure": m["peak_memory_measure"],
        "trainable_share_mlp": round(m["trainable_parameters"] / m["total_parameters"], 4),
        "full_size_optimizer_bytes_ratio": {k: round(v["optimizer_bytes_ratio"], 4) for k, v in shares.items()},
        "model": {"config": Path(args.config).name, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "vocab": cfg.vocab_size, "dtype": args.dtype, "bf16_autocast": args.bf16},
        "batch": {"rows": args.batch_size, "grad_accum": args.grad_accum, "max_length": args.max_length, "steps": args.steps, "rounds": args.rounds,
                  "group_by_length": args.group_by_length},
        "device": args.device,
        "machine": info,
    }
    return emit(figures, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
