"""The benchmark scripts' plumbing, in seconds: no timing is asserted (speed claims live in perf/README.md).

One unlearning side of ``unlearn_memory.py`` runs in-process at a tiny size; the rest are the
pure parts (fits, FLOP model, the GPU check's table with failed / partial / missing sections).
The scripts' own smallest modes (``scaling.py --quick``, ``gpu_check.py --smoke``) take minutes
and are run by hand (perf/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "perf"
sys.path.insert(0, str(BENCH))


def test_unlearn_memory_one_side_tiny(olmo_tokenizer_dir, semeval_dir):
    import unlearn.api as api
    import unlearn_memory

    before = api.PairedCollator, api.select_parameters
    argv = ["--tokenizer", str(olmo_tokenizer_dir), "--data", str(semeval_dir), "--hidden-override", "32", "--layers-override", "6",
            "--batch-size", "1", "--grad-accum", "2", "--max-length", "24", "--steps", "1", "--threads", "0"]  # 0: leave the session's threads alone
    results = {}
    for side in ("mlp", "full"):
        results[side] = unlearn_memory.run_side(unlearn_memory.parser().parse_args(argv + ["--worker", side]))
        assert (api.PairedCollator, api.select_parameters) == before  # the measuring patches are undone
    m, f = results["mlp"], results["full"]
    assert f["trainable_parameters"] == f["total_parameters"] > m["trainable_parameters"] > 0
    for r in (m, f):
        # AdamW keeps exp_avg and exp_avg_sq per trainable fp32 weight (+ a scalar step per tensor)
        assert 8 * r["trainable_parameters"] <= r["optimizer_bytes"] <= 8 * r["trainable_parameters"] + 4096
        assert r["gradient_bytes"] == 4 * r["trainable_parameters"]
        assert r["tokens_per_step"] > 0 and r["padded_tokens_per_step"] >= r["tokens_per_step"] and len(r["step_times_s"]) == 1
        # Peak RSS is a process-wide high-water mark: in this shared pytest process an earlier test
        # may already hold it, so the delta means nothing here (it can even be negative); the script
        # measures each side in a fresh process, where it is the side's real peak.
        assert r["stopped"] is None and isinstance(r["peak_memory_bytes"], int)
    assert m["optimizer_bytes"] / f["optimizer_bytes"] == pytest.approx(m["trainable_parameters"] / f["trainable_parameters"], rel=1e-3)


def test_full_size_optimizer_share_meets_the_goal():
    import unlearn_memory

    shares = unlearn_memory.full_size_shares("0-5", "mlp")
    one = shares["olmo-1b-0724"]
    assert one["total_parameters"] == 1_279_787_008 and one["trainable_parameters"] == 6 * 3 * 2048 * 8192
    assert one["optimizer_bytes_ratio"] <= 0.25 and shares["olmo-7b-0724-instruct"]["optimizer_bytes_ratio"] <= 0.25


def test_power_fit_recovers_exponents():
    import numpy as np

    from scaling import line_fit, power_fit

    x = [2, 4, 8, 16]
    fit = power_fit(x, [3 * v**2 for v in x])
    assert fit["k"] == pytest.approx(2) and fit["a"] == pytest.approx(3) and fit["r2"] == pytest.approx(1) and fit["k_last"] == pytest.approx(2)
    line = line_fit(x, [1.5 + 0.25 * v for v in x])
    assert line["intercept_s"] == pytest.approx(1.5) and line["slope_s"] == pytest.approx(0.25)
    assert np.isfinite(power_fit([1, 2], [1.0, 1.0])["k"])


def test_flop_model():
    from projection import flops

    counts = {"matmul": 1000, "trainable": 250, "layers": 2, "d_model": 8}
    tokens = {"padded_tokens": 10, "attention_token_width": 0, "tokens": 10}
    assert flops(counts, tokens, "full") == 6 * 1000 * 10
    assert flops(counts, tokens, "partial") == (4 * 1000 + 2 * 250) * 10
    assert flops(counts, tokens, "forward") == 2 * 1000 * 10


def test_gpu_check_table_survives_failed_and_missing_sections():
    from bench_common import last_json_line
    from gpu_check import table

    results = {
        "unlearn": {"ok": False, "error": "timed out after 170 s"},
        "mmlu": {"ok": True, "partial": True, "result": {"runs": [{"limit": 1, "questions": 57, "seconds": 30.0}], "questions_per_s": 1.9,
                                                         "requests_per_s": 7.6, "overhead_s": 0.0, "marginal": False}},
        "projection": {"ok": True, "result": {"smoke": False, "from_measured": {"OLMo-1B-0724": {"mmlu_minutes": 2.0}},
                                              "estimated": {"OLMo-7B-0724-Instruct": {"partial": [1, 2], "full": [2, 3], "mmlu": [0.5, 1]}}}},
    }
    text = "\n".join(table(results))
    assert "| unlearning | failed: timed out after 170 s |" in text
    assert "| tracing | not run |" in text and "| batched evaluation | not run |" in text
    assert "incl. lm-eval's fixed cost" in text and "MMLU 2.0 min" in text and "estimated OLMo-7B-0724-Instruct" in text
    assert last_json_line("noise\n{\"a\": 1}\n{bad\n") == {"a": 1}
    with pytest.raises(ValueError):
        last_json_line("no json here")
    json.dumps(results)  # what gpu_check.json holds stays serialisable


def test_projection_counts_length_grouping(semeval_dir, olmo_tokenizer_dir):
    from projection import unlearning_tokens

    plain = unlearning_tokens(semeval_dir, olmo_tokenizer_dir, epochs=1)
    grouped = unlearning_tokens(semeval_dir, olmo_tokenizer_dir, epochs=1, group_by_length=True)
    assert plain["real_tokens"] == grouped["real_tokens"] and plain["micro_batches"] == grouped["micro_batches"] == 93
    assert 1 - plain["real_tokens"] / plain["padded_tokens"] > 0.6  # the paper's random micro-batches: ~73 % padding
    assert grouped["padded_tokens"] < 0.4 * plain["padded_tokens"]  # measured over 8 epochs: 1.66 M vs 4.70 M


def test_gpu_scripts_refuse_bad_arguments(tmp_path):
    import subprocess

    def run(*cmd):
        return subprocess.run(["bash", *cmd], capture_output=True, text=True, timeout=60)

    usage = run(str(BENCH / "gpu_wheels.sh"))
    assert usage.returncode == 2 and "gpu_wheels.sh DIR" in usage.stdout
    bad = run(str(BENCH / "gpu_wheels.sh"), str(tmp_path / "w"), "--pyversion", "3.12")
    assert bad.returncode == 2 and "unknown option --pyversion" in bad.stderr
    empty = run(str(BENCH / "gpu_check.sh"), "--wheels", str(tmp_path), "--out", str(tmp_path / "out"))
    assert empty.returncode == 2 and f"{tmp_path} holds no .whl files (make them with perf/gpu_wheels.sh)" in empty.stderr


def test_trace_speed_real_shape_tiny(olmo_tokenizer_dir, tmp_path, capsys):
    """``trace_speed.py --shape real`` end to end at a tiny size: every side agrees with ROME's loop,
    the work counts order as they must, and the JSON line carries what the README quotes."""
    import trace_speed

    out = tmp_path / "trace.json"
    assert trace_speed.main(["--shape", "real", "--layers", "3", "--hidden", "64", "--facts", "1", "--samples", "2", "--threads", "0", "--json-out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["shape"] == "llama-3x64" and figures["suffix"] and figures["skip_layers"]
    assert figures["max_abs_diff"] <= 1e-5 and figures["max_abs_diff"] <= 1e-3 * figures["max_abs_ie"] and figures["auto_max_abs_diff"] <= 1e-5
    assert figures["work_ratio"] > figures["work_ratio_no_skip"] > 1 and figures["bound_ratio"] > 1 and figures["ratio"] > 0
    assert set(figures["auto_agreement"]) == {"hidden", "mlp", "attn"}
    for method in ("exact", "auto"):
        rows = figures["projection"][method]
        assert rows["OLMo-7B-0724-Instruct"]["token_layers"] > rows["OLMo-1B-0724"]["token_layers"] > 0
    assert figures["projection"]["auto"]["OLMo-1B-0724"]["cpu_s"] < figures["projection"]["exact"]["OLMo-1B-0724"]["cpu_s"]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")


def test_real_model_request_is_a_small_semeval_request(semeval_dir, tmp_path):
    """perf/real_model.py's request (the SmolLM2 check): the public data's layout, disjoint people, never-seen non-members."""
    import re

    import real_model

    from unlearn.data import load_semeval

    out = real_model.make_request(tmp_path / "request", semeval_dir)
    data = load_semeval(out)
    people = {}
    for split, n in real_model.PEOPLE.items():
        kind, part = split.split("_")
        ids = list(data.get(kind, part)["id"])
        people[split] = {re.sub(r"(sc|qa)\d$", "", i) for i in ids}
        assert len(people[split]) == n and len(ids) == 6 * n, split
    assert sum(len(p) for p in people.values()) == len(set().union(*people.values()))  # nobody in two splits
    docs = {name: [json.loads(l) for l in (out / "mia_data" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("member", "nonmember", "validation/member", "validation/nonmember")}
    assert len(docs["member"]) == 8 and len(docs["nonmember"]) == 16 and len(docs["validation/member"]) == 3 and len(docs["validation/nonmember"]) == 8
    never = {re.sub(r"(sc|qa)\d$", "", d["id"]) for name in ("nonmember", "validation/nonmember") for d in docs[name]}
    assert len(never) == 24 and not never & set().union(*people.values())
    assert real_model.make_request(tmp_path / "request", semeval_dir) == out  # built once, reused
