"""Estimated GPU time of the full SemEval runs: token counts from the real data and tokenizer, a FLOP model, an MFU range.

    python perf/projection.py                   # seconds; prints the tables perf/README.md quotes
    python perf/projection.py --mfu 0.2,0.45 --peak-tflops 989

Nothing here is measured on a GPU: it counts work and divides by an assumed throughput.
``perf/gpu_check.sh`` measures the throughput and replaces the assumption
(:func:`measured_projection` is what it calls).

Work counted:

* **unlearning** (the paper's recipe: 8 epochs, 12 forget + 12 retain rows per micro-batch,
  accumulation 10, ``max_length`` 512, method ``sha256``): the rows are encoded exactly as
  ``unlearn.dataset.encode_split`` does (``input + output + EOS``, output-only labels) and paired
  and batched exactly as ``PairedDataset`` + ``PairedCollator`` + the trainer's joint stack do, so
  both the real tokens and the padded tokens every forward runs over are exact. FLOPs per padded
  token: forward ``2·N`` (``N`` = every weight matrix the token passes, LM head included,
  embedding lookup excluded) plus attention ``4·L·d·T`` (scores and weighted sum, ``T`` the row
  width); backward: gradients w.r.t. activations ``2·N`` + attention ``8·L·d·T`` for full
  fine-tuning, the same from the LM head down to the lowest trainable layer for partial training
  (layers 0-5: essentially the whole stack), and gradients w.r.t. weights ``2·N_trainable``. So full
  fine-tuning ≈ ``6·N`` per token and layers 0-5 MLP ≈ ``4·N + 2·N_trainable``.
* **MMLU** (lm-eval's stock 0-shot prompt, 14,042 test questions × 4 choices = 56,168
  loglikelihood requests): lm-eval's HF backend groups a question's four one-token continuations
  into one forward (``logits_cache``), so 14,042 forwards over the prompt tokens (counted with the
  real tokenizer from ``../shared/data/mmlu_no_train``); ``2·N`` + attention per token.

Time = FLOPs / (peak × MFU). The default range, 10-40 % of the H100's 989 dense bf16 TFLOP/s, is
an assumption for HF-Trainer fine-tuning of 1-7B models on micro-batches this small (24 rows of
~200 tokens); MMLU (short prompts, lm-eval's batches) is assumed at 10-30 %. Fixed costs (model
loading, lm-eval building 57 tasks, the Trainer's per-step overhead) are not in the FLOPs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import MMLU, OLMO_1B, OLMO_7B, SEMEVAL, TOKENIZER, olmo_config, olmo_tokenizer  # noqa: E402

MODELS = {"OLMo-1B-0724": OLMO_1B, "OLMo-7B-0724-Instruct": OLMO_7B}
H100_BF16_TFLOPS = 989.0  # dense bf16, SXM


def model_counts(path: Path, layers: str = "0-5", kind: str = "mlp") -> dict:
    """Parameter counts of a config (meta device): total, matmul weights per token, trainable (layers/kind)."""
    import torch
    from transformers import OlmoForCausalLM

    from unlearn.params import parse_layers, resolve_kind, select_parameters

    cfg = olmo_config(path)
    with torch.device("meta"):
        model = OlmoForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    spec = parse_layers(layers, cfg.num_hidden_layers)
    sel = select_parameters(model, spec.layers, resolve_kind(kind, spec))
    return {
        "total": total,
        "matmul": total - embed,  # every weight a token is multiplied by (the embedding is a lookup)
        "trainable": sel.trainable,
        "layers": cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "vocab": cfg.vocab_size,
    }


def unlearning_tokens(data=SEMEVAL, tokenizer=TOKENIZER, *, epochs: int = 8, batch_size: int = 12, grad_accum: int = 10, max_length: int = 512, seed: int = 42,
                      group_by_length: bool = False) -> dict:
    """Real and padded tokens of the paper's run, batch by batch as the trainer forms them (one process)."""
    from unlearn.data import load_semeval
    from unlearn.dataset import PairedDataset, encode_split

    tok = olmo_tokenizer(tokenizer)
    d = load_semeval(data)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        forget = encode_split(tok, d.get("forget", "train"), max_length=max_length, prompt_format="raw", name="forget")
        retain = encode_split(tok, d.get("retain", "train"), max_length=max_length, prompt_format="raw", name="retain")
    ds = PairedDataset(forget, retain, seed=seed, group_size=batch_size * grad_accum if group_by_length else 0, batch_size=batch_size)
    n = len(ds)
    real = padded = attn = micro = 0
    for epoch in range(epochs):
        keys = list(range(epoch * n, (epoch + 1) * n))
        for start in range(0, n, batch_size):
            items = [ds[k] for k in keys[start : start + batch_size]]
            f = [len(it["forget_input_ids"]) for it in items]
            r = [len(s) for it in items for s in it["retain_input_ids"]]
            width = max(f + r)  # the trainer stacks both halves to the wider one
            real += sum(f) + sum(r)
            padded += width * (len(f) + len(r))
            attn += width * width * (len(f) + len(r))  # Σ rows·T² for the attention term
            micro += 1
    steps_per_epoch = math.ceil(math.ceil(n / batch_size) / grad_accum)
    return {
        "forget_rows": forget.rows, "retain_rows": retain.rows,
        "forget_tokens": sum(map(len, forget.input_ids)), "retain_tokens": sum(map(len, retain.input_ids)),
        "forget_truncated": forget.truncated, "retain_truncated": retain.truncated,
        "epochs": epochs, "micro_batches": micro, "optimizer_steps": steps_per_epoch * epochs,
        "real_tokens": real, "padded_tokens": padded, "attention_token_width": attn,
        "batch_size": batch_size, "grad_accum": grad_accum, "max_length": max_length, "group_by_length": group_by_length,
    }


def mmlu_tokens(root=MMLU, tokenizer=TOKENIZER) -> dict:
    """Prompt tokens of lm-eval's 0-shot MMLU prompt over every test question (one forward per question)."""
    import datasets

    from unlearn.eval.mmlu import local_subjects, stock_subjects

    tok = olmo_tokenizer(tokenizer)
    root = Path(root)
    subjects = [s for s in local_subjects(root) if s in stock_subjects()]
    questions = tokens = sq = 0
    for s in subjects:
        files = sorted(str(p) for p in (root / s / "test").glob("*.arrow"))
        ds = datasets.Dataset.from_file(files[0]) if len(files) == 1 else datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
        head = f"The following are multiple choice questions (with answers) about {s.replace('_', ' ')}.\n\n"
        texts = [head + f"{q.strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer: A" for q, c in zip(ds["question"], ds["choices"])]
        lengths = [len(ids) for ids in tok(texts)["input_ids"]]
        questions += len(lengths)
        tokens += sum(lengths)
        sq += sum(n * n for n in lengths)
    return {"subjects": len(subjects), "questions": questions, "requests": 4 * questions, "forwards": questions, "tokens": tokens, "attention_token_width": sq}


def flops(counts: dict, tokens: dict, mode: str) -> float:
    """FLOPs of the unlearning run (``mode`` full | partial) or of MMLU (``mode`` forward)."""
    n, nt, L, d = counts["matmul"], counts["trainable"], counts["layers"], counts["d_model"]
    attn_fwd = 4 * L * d * tokens["attention_token_width"]
    if mode == "forward":
        return 2 * n * tokens["tokens"] + attn_fwd
    p = tokens["padded_tokens"]
    if mode == "full":
        return 6 * n * p + 3 * attn_fwd
    return (4 * n + 2 * nt) * p + 3 * attn_fwd


def projection(data=SEMEVAL, mmlu=MMLU, tokenizer=TOKENIZER, *, mfu=(0.10, 0.40), mmlu_mfu=(0.10, 0.30), peak_tflops: float = H100_BF16_TFLOPS,
               group_by_length: bool = False) -> dict:
    tokens = unlearning_tokens(data, tokenizer, group_by_length=group_by_length)
    try:
        mm = mmlu_tokens(mmlu, tokenizer)
    except Exception as exc:  # no local MMLU copy: the unlearning part still stands
        mm = {"error": f"{type(exc).__name__}: {exc}"}
    out = {"tokens": tokens, "mmlu": mm, "assumptions": {"peak_tflops": peak_tflops, "mfu": list(mfu), "mmlu_mfu": list(mmlu_mfu)}, "models": {}}
    for name, path in MODELS.items():
        c = model_counts(path)
        entry = {"parameters": c}
        for mode in ("partial", "full"):
            f = flops(c, tokens, mode)
            entry[mode] = {"flops": f, "minutes": [f / (peak_tflops * 1e12 * m) / 60 for m in (mfu[1], mfu[0])]}
        # memory for training on one GPU: fp32 master weights, fp32 grads + AdamW (m, v) of the trainable part
        entry["partial"]["state_gib"] = (4 * c["total"] + 12 * c["trainable"]) / 2**30
        entry["full"]["state_gib"] = 16 * c["total"] / 2**30
        if "tokens" in mm:
            f = flops(c, mm, "forward")
            entry["mmlu"] = {"flops": f, "minutes": [f / (peak_tflops * 1e12 * m) / 60 for m in (mmlu_mfu[1], mmlu_mfu[0])]}
        out["models"][name] = entry
    return out


def measured_projection(proj: dict, measured: dict) -> dict:
    """Minutes of each full run from measured throughputs on OLMo-1B (tokens/s, MMLU questions/s).

    OLMo-1B: padded tokens / measured padded tokens per second. OLMo-7B: the same measured
    FLOP rate (MFU carried over from 1B), scaled by the FLOP ratio — an extrapolation.
    """
    out = {}
    one = proj["models"]["OLMo-1B-0724"]
    for mode in ("partial", "full"):
        rate = measured.get(f"unlearn_padded_tokens_per_s_{mode}")
        if not rate:
            continue
        seconds_1b = proj["tokens"]["padded_tokens"] / rate
        for name, entry in proj["models"].items():
            out.setdefault(name, {})[f"unlearn_{mode}_minutes"] = seconds_1b * entry[mode]["flops"] / one[mode]["flops"] / 60
    qps = measured.get("mmlu_questions_per_s")
    overhead = measured.get("mmlu_overhead_s", 0.0)
    if qps and "questions" in proj["mmlu"]:
        seconds_1b = proj["mmlu"]["questions"] / qps
        for name, entry in proj["models"].items():
            if "mmlu" in entry:
                out.setdefault(name, {})["mmlu_minutes"] = (overhead + seconds_1b * entry["mmlu"]["flops"] / one["mmlu"]["flops"]) / 60
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(SEMEVAL))
    p.add_argument("--mmlu", default=str(MMLU))
    p.add_argument("--tokenizer", default=str(TOKENIZER))
    p.add_argument("--mfu", default="0.10,0.40", help="assumed MFU range for unlearning (low,high)")
    p.add_argument("--mmlu-mfu", default="0.10,0.30", help="assumed MFU range for MMLU")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    p.add_argument("--group-by-length", action="store_true", help="count the micro-batches of UnlearnConfig.group_by_length (length-sorted within each step)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    mfu = tuple(float(x) for x in args.mfu.split(","))
    mmlu_mfu = tuple(float(x) for x in args.mmlu_mfu.split(","))
    proj = projection(args.data, args.mmlu, args.tokenizer, mfu=mfu, mmlu_mfu=mmlu_mfu, peak_tflops=args.peak_tflops, group_by_length=args.group_by_length)
    t, mm = proj["tokens"], proj["mmlu"]
    print(f"unlearning data: forget_train {t['forget_rows']} rows / {t['forget_tokens']:,} tokens ({t['forget_truncated']} cut at {t['max_length']}), "
          f"retain_train {t['retain_rows']} rows / {t['retain_tokens']:,} tokens ({t['retain_truncated']} cut)")
    print(f"8 epochs × (12 + 12 rows) × accumulation 10: {t['micro_batches']:,} micro-batches, {t['optimizer_steps']} optimizer steps, "
          f"{t['real_tokens']:,} real tokens, {t['padded_tokens']:,} with padding")
    if "questions" in mm:
        print(f"MMLU: {mm['subjects']} subjects, {mm['questions']:,} questions, {mm['requests']:,} loglikelihood requests, "
              f"{mm['forwards']:,} forwards over {mm['tokens']:,} prompt tokens")
    else:
        print(f"MMLU: not counted ({mm['error']})")
    print(f"\nassumed: {args.peak_tflops:g} TFLOP/s peak, MFU {mfu[0]:.0%}-{mfu[1]:.0%} (unlearning), {mmlu_mfu[0]:.0%}-{mmlu_mfu[1]:.0%} (MMLU)\n")
    print("| model | params | trainable (0-5 MLP) | unlearning FLOPs (0-5 MLP / full) | est. minutes 0-5 MLP | est. minutes full | training state 0-5 MLP / full | est. MMLU minutes (compute) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, e in proj["models"].items():
        c = e["parameters"]
        mmlu_txt = f"{e['mmlu']['minutes'][0]:.1f}-{e['mmlu']['minutes'][1]:.1f}" if "mmlu" in e else "—"
        print(f"| {name} | {c['total'] / 1e9:.2f} B | {c['trainable'] / 1e9:.3f} B ({c['trainable'] / c['total']:.1%}) | "
              f"{e['partial']['flops']:.2e} / {e['full']['flops']:.2e} | {e['partial']['minutes'][0]:.1f}-{e['partial']['minutes'][1]:.1f} | "
              f"{e['full']['minutes'][0]:.1f}-{e['full']['minutes'][1]:.1f} | {e['partial']['state_gib']:.1f} / {e['full']['state_gib']:.1f} GiB | {mmlu_txt} |")
    proj["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(proj))
    return 0


if __name__ == "__main__":
    sys.exit(main())
