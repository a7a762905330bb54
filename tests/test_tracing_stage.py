"""The tracing stage and ``amnesia trace``: outputs, their schemas, and one-line errors."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from pipelines.trace_stage import FactSource, TraceStageConfig, facts_from_data, load_fact_file, run_trace
from tracing import AmnesiaError, SelectionConfig, TraceConfig, load_layers
from unlearn.data import load_semeval
from unlearn.models import ModelOptions, load_model

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("one_torch_thread")]
PNG = b"\x89PNG\r\n\x1a\n"


def _png(path) -> bool:
    return path.is_file() and path.stat().st_size > 2000 and path.read_bytes()[:8] == PNG


def test_facts_from_data_picks_split_and_part(fixture_world):
    data = load_semeval(fixture_world)
    forget, _ = facts_from_data(data)
    both, _ = facts_from_data(data, FactSource(split="all"))
    val, _ = facts_from_data(data, FactSource(part="validation", rephrase=True))
    assert len(forget) == 5 * 14 and len(both) == 2 * len(forget) and len(val) == 5 * 6
    assert all(f.prompt == f"What is {f.subject}'s {f.relation}?" for f in val)
    assert {f.id for f in forget} <= set(data.get("forget", "train")["id"])
    with pytest.raises(AmnesiaError, match="split 'test'"):
        facts_from_data(data, FactSource(split="test"))


def test_run_trace_writes_every_output(fixture_target, fixture_world, tmp_path):
    model, tok = load_model(fixture_target, ModelOptions(device="cpu"))
    config = TraceStageConfig(trace=TraceConfig(samples=3, window=3), select=SelectionConfig(k=2, evidence=False), facts=FactSource(max_facts=4), heatmaps=2)
    out = run_trace(model, tok, load_semeval(fixture_world), tmp_path / "trace", config, progress=False)
    root = tmp_path / "trace"

    doc = json.loads((root / "trace.json").read_text())
    assert doc["schema"] == 1 and doc["kind"] == "trace" and doc["model"] == str(fixture_target) and doc["n_layers"] == 6
    assert doc["counts"] == {"candidates": 70, "kept": 70, "traced": 4, "subject not found": 0, "wrong prediction": 0, "too long": 0}
    assert doc["summary"]["counts"] == doc["counts"] and doc["suffix"] is True
    assert doc["skipped"] == []  # the fixture predicts every forget-train answer
    fact = doc["facts"][0]
    for key in ("prompt", "subject", "answer", "tokens", "subject_range", "p_clean", "p_corrupt", "ie"):
        assert key in fact
    T = len(fact["tokens"])
    assert set(fact["ie"]) == {"hidden", "mlp", "attn"} and all(len(v) == T and len(v[0]) == 6 for v in fact["ie"].values())
    assert fact["tokens"][fact["subject_range"][0] : fact["subject_range"][1]] == [" Xanthe", " Yarrow"]
    summary = doc["summary"]
    assert summary["n_facts"] == 4 and summary["te"]["n"] == 4
    stats = summary["aie"]["mlp"]["last_subject"]
    assert len(stats["mean"]) == 6 and all(lo <= m <= hi for lo, m, hi in zip(stats["ci_low"], stats["mean"], stats["ci_high"]))

    sel = load_layers(root / "layers.json")
    assert sel == out.selection
    assert sel.kind == "mlp" and len(sel.layers) == 2 and sel.layers[1] == sel.layers[0] + 1 and 0 <= sel.layers[0] <= 4
    assert sel.n_layers == 6 and sel.n_facts == 4 and sel.model == str(fixture_target)
    assert sel.params["tracing"] == "exact" and sel.params["group"] in ("first_subject", "last_subject") and sel.params["group_requested"] == "auto"
    assert sel.scores == summary["aie"]["mlp"][sel.params["group"]]["mean"]

    heatmaps = sorted((root / "heatmaps").iterdir())
    assert len(heatmaps) == 2 and all(_png(p) for p in heatmaps)
    assert _png(root / "aie.png")
    assert not list(root.glob(".tmp-*"))
    # The model the other stages use is untouched.
    assert not any("_original_component" in n for n, _ in model.named_parameters())


def test_run_trace_refuses_to_overwrite_unless_asked(fixture_target, tmp_path):
    (tmp_path / "trace.json").write_text("{}")
    model, tok = load_model(fixture_target, ModelOptions(device="cpu"))
    with pytest.raises(AmnesiaError, match="trace.json already exists; pass --overwrite"):
        run_trace(model, tok, [], tmp_path, overwrite=False)
    with pytest.raises(AmnesiaError, match="the given facts: no QA rows"):
        run_trace(model, tok, [], tmp_path)
    with pytest.raises(AmnesiaError, match="selection kind 'attn' is not among the traced kinds hidden,mlp"):
        run_trace(model, tok, [], tmp_path, TraceStageConfig(trace=TraceConfig(kinds=("hidden", "mlp")), select=SelectionConfig(kind="attn")))


def test_cli_trace_end_to_end(fixture_target, fixture_world, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["trace", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--max-facts", "2", "--samples", "2",
            "--kinds", "hidden,mlp", "--window", "3", "--select-k", "3", "--no-select-evidence", "--heatmaps", "1", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "70 candidates, 70 kept, 2 traced" in printed and "selected mlp layers" in printed
    sel = load_layers(out / "layers.json")
    assert len(sel.layers) == 3 and sel.n_layers == 6
    assert len(list((out / "heatmaps").glob("*.png"))) == 1 and _png(out / "aie.png")

    assert main(args) == 2  # outputs exist
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("amnesia trace: error:") and "--overwrite" in err
    assert main(args + ["--overwrite", "--method", "attribution"]) == 0
    assert json.loads((out / "trace.json").read_text())["method"] == "attribution"
    capsys.readouterr()
    assert main(args + ["--overwrite", "--method", "auto"]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "trace.json").read_text())
    assert doc["method"] == "auto" and doc["skip_layers"] is True and doc["config"]["confirm"] == ["last_subject", "first_subject"]
    assert set(doc["summary"]["agreement"]) == {"hidden", "mlp"} and all("exact_positions" in f and "screen" in f for f in doc["facts"])
    assert "auto: the attribution screen ranks mlp layers like exact tracing at last_subject, first_subject: Spearman" in printed and "entering mid-stack on" in printed

    for extra, message in (
        (["--noise", "loud"], "noise 'loud'"),
        (["--kinds", "hidden", "--select-kind", "attn"], "selection kind 'attn' is not among the traced kinds hidden"),
        (["--samples", "0"], "samples 0"),
        (["--method", "auto", "--confirm", "middle"], "confirm middle"),
    ):
        assert main(args[:6] + [str(tmp_path / "x")] + args[7:] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err


def test_cli_trace_reads_a_facts_file(fixture_target, tmp_path, capsys):
    facts = [
        {"prompt": "What is Xanthe Yarrow's phone number?", "subject": "Xanthe Yarrow", "answer": "9288840018"},
        {"prompt": "What is Xanthe Yarrow's birth date?", "subject": "Xanthe Yarrow", "answer": "no such date"},
    ]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    assert [f.subject for f in load_fact_file(path)] == ["Xanthe Yarrow", "Xanthe Yarrow"]
    out = tmp_path / "out"
    code = main(["trace", "--model", str(fixture_target), "--data", str(path), "--out", str(out), "--samples", "2", "--kinds", "hidden,mlp", "--device", "cpu", "--quiet"])
    assert code == 0
    doc = json.loads((out / "trace.json").read_text())
    assert doc["counts"]["traced"] == 1 and doc["counts"]["wrong prediction"] == 1
    assert doc["facts"][0]["te"] > 0.5
    # a record whose subject is not in its prompt is a typo in the file: an error, not a skip
    path.write_text(json.dumps(facts[:1] + [{"prompt": "What is Xanthe Yarrow's phone number?", "subject": "Goldi Aqua", "answer": "1"}]))
    with pytest.raises(AmnesiaError, match=r"facts.json\[1\]: subject 'Goldi Aqua' does not occur in prompt"):
        load_fact_file(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x y"}\n')
    assert main(["trace", "--model", str(fixture_target), "--data", str(bad), "--out", str(out / "b"), "--device", "cpu"]) == 2
    assert "bad.jsonl[0]: missing or empty field(s) subject, answer" in capsys.readouterr().err
