"""The audit (unlearn.audit, pipelines.audit, `amnesia audit`): each quantization scheme against a
hand computation, a planted update that quantization undoes (recovery 1) or keeps (recovery 0),
relearning that trains on no scored row, the logit lens's last layer equal to the model's own
output, the CLI on the fixture (the run's audit stage: tests/test_pipeline.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tracing.errors import AmnesiaError
from unlearn.audit import AuditConfig, AuditTask, recovery, run_audit
from unlearn.audit.quantize import int4_group, quantize_model, roundtrip

ROOT = Path(__file__).resolve().parents[1]

#: The NF4 code book (Dettmers et al. 2023, QLoRA, Appendix E).
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
       -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def test_quantization_schemes_match_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 256, generator=g)
    # int8 (LLM.int8's weight format): per row, absmax scaled to ±127, rounded
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    assert torch.allclose(roundtrip(w, "int8"), torch.round(w / scale) * scale, atol=1e-6)
    # NF4: blocks of 64 consecutive values (row-major), each value → the nearest code times the block's
    # absmax; the absmax itself double-quantized (int8, QLoRA), so the scale is within a step of it
    flat = w.reshape(-1, 64)
    absmax = flat.abs().amax(dim=1, keepdim=True)
    codes = torch.tensor(NF4)
    index = (flat / absmax).unsqueeze(-1).sub(codes).abs().argmin(dim=-1)
    got = roundtrip(w, "nf4").reshape(-1, 64)
    got_index = (got / absmax).unsqueeze(-1).sub(codes).abs().argmin(dim=-1)
    assert (got_index == index).float().mean() > 0.999
    scale = (got[codes[index] != 0] / codes[index][codes[index] != 0]).reshape(-1)
    assert (scale - absmax.expand_as(flat)[codes[index] != 0]).abs().max() < 0.01 * absmax.max()
    # int4: groups of 128 columns, 16 levels from the group's min to its max (zero point), round to nearest
    groups = w.reshape(6, 2, 128)
    lo, hi = groups.amin(dim=-1, keepdim=True).clamp(max=0), groups.amax(dim=-1, keepdim=True).clamp(min=0)
    step = (hi - lo) / 15
    zero = torch.round(-lo / step)
    hand = ((torch.clamp(torch.round(groups / step) + zero, 0, 15) - zero) * step).reshape(6, 256)
    assert torch.allclose(roundtrip(w, "int4"), hand, atol=1e-5)
    assert int4_group(256) == 128 and int4_group(96) == 32 and int4_group(64) == 64
    # bf16
    assert torch.equal(roundtrip(w, "bf16"), w.to(torch.bfloat16).float())
    with pytest.raises(AmnesiaError, match="expected one of"):
        roundtrip(w, "fp3")


class ForgetProbability(AuditTask):
    """A continuous forget metric for the planted-update test: the mean probability of the forget answers."""

    benchmark = "test"
    forget_metrics = ("forget p",)
    retain_metrics = ("retain p",)

    def __init__(self, forget, retain):
        self.forget, self.retain = forget, retain

    def score(self, model, tokenizer, part="all", probe=None):
        from unlearn.eval.nll import completion_nll

        def mean_p(rows):
            nll = completion_nll(model, tokenizer, [r["input"] for r in rows], [r["output"] for r in rows])
            return sum(torch.exp(torch.tensor(-x)).item() for x in nll) / len(nll)

        return {"forget p": mean_p(self.forget), "retain p": mean_p(self.retain)}


def _qa_rows(world: Path, kind: str, n: int) -> list[dict]:
    from unlearn.data import load_semeval

    ds = load_semeval(world).get(kind, "train")
    return [{"input": r["input"], "output": r["output"]} for r in ds if "qa" in r["id"][-3:]][:n]


def _linear_weights(model):
    from unlearn.params import find_decoder_layers

    _, layers = find_decoder_layers(model)
    return [m.weight for m in layers.modules() if isinstance(m, torch.nn.Linear)]


def test_quantization_undoes_an_update_below_the_bucket_and_keeps_one_above(tmp_path, fixture_world, fixture_target, one_torch_thread):
    """A target on the int8 grid, an 'unlearning' update planted inside each weight's bucket: the
    quantized unlearned model is the quantized target again (recovery 1); the same direction at three
    buckets stays on the grid (recovery 0)."""
    from unlearn.models import load_model

    forget, retain = _qa_rows(fixture_world, "forget", 12), _qa_rows(fixture_world, "retain", 12)
    model, tok = load_model(fixture_target)
    quantize_model(model, "int8")  # the target, on the grid
    model.save_pretrained(tmp_path / "target")
    tok.save_pretrained(tmp_path / "target")
    weights = _linear_weights(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    from unlearn.eval.nll import completion_labels

    loss = 0  # the direction that raises the forget answers' NLL (gradient ascent's sign)
    for r in forget:
        ids, labels = completion_labels(tok, r["input"], r["output"])
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        loss = loss + out.loss
    loss.backward()
    directions = [w.grad.sign() for w in weights]
    originals = [w.detach().clone() for w in weights]
    for name, buckets, margin in (("below", 0.45, 1), ("above", 3, 4)):
        with torch.no_grad():
            for w, d, o in zip(weights, directions, originals):
                step = o.abs().amax(dim=1, keepdim=True) / 127
                keep = o.abs() <= o.abs().amax(dim=1, keepdim=True) - margin * step  # the row's absmax (its scale) stays
                w.copy_(o + buckets * step * d * keep)
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    task = ForgetProbability(forget, retain)
    config = AuditConfig(attacks=("int8",), logit_lens=False, references=False)
    load = lambda path: load_model(path)  # noqa: E731
    below = run_audit({"unlearned": str(tmp_path / "below"), "target": str(tmp_path / "target")}, task, config, load=load, log=lambda m: None)
    above = run_audit({"unlearned": str(tmp_path / "above"), "target": str(tmp_path / "target")}, task, config, load=load, log=lambda m: None)
    t, u_below, u_above = (below["scores"]["target"]["none/all"]["forget p"], below["scores"]["unlearned"]["none/all"]["forget p"],
                           above["scores"]["unlearned"]["none/all"]["forget p"])
    assert u_below < 0.9 * t and u_above < u_below, (t, u_below, u_above)  # the planted updates did forget
    assert below["recovery"]["int8"]["forget p"] == pytest.approx(1.0, abs=1e-3)
    assert above["recovery"]["int8"]["forget p"] == pytest.approx(0.0, abs=1e-3)
    assert below["worst_case"]["attack"] == "int8" and below["attacks"]["int8"]["library"] == "torchao"


def test_recovery_definition():
    from unlearn.audit import recovery_table

    assert recovery(0.5, 0.0, 1.0) == 0.5 and recovery(0.2, 0.2, 0.9) == 0.0
    assert recovery(0.5, 0.4, 0.4) is None and recovery(None, 0.1, 0.9) is None

    class Task(AuditTask):
        forget_metrics, retain_metrics, worst_case_metrics = ("k", "mia"), ("r",), ("k",)

    results = {"unlearned": {"none/all": {"k": 0.0, "mia": 0.5, "r": 0.8}, "int8": {"k": 0.25, "mia": 1.0, "r": 0.4},
                             "paraphrase": {"k": 0.2, "mia": None, "r": 0.8}},
               "target": {"none/all": {"k": 1.0, "mia": 1.0, "r": 0.9}, "paraphrase": {"k": 0.4, "mia": None, "r": 0.9}}}
    table = recovery_table(results, Task(), ["int8", "paraphrase"])
    assert table["recovery"]["int8"] == {"k": 0.25, "mia": 1.0} and table["retain_ratio"]["int8"] == {"r": 0.5}
    assert table["recovery"]["paraphrase"]["k"] == pytest.approx(0.5)  # a probe's top is the target under the same probe
    assert table["worst_case"] == {"attack": "paraphrase", "metric": "k", "recovery": pytest.approx(0.5)}  # mia is not a worst-case metric
    results["target"]["paraphrase"]["k"] = 0.24  # asked that way the target keeps under a quarter of its lead: unreadable
    assert recovery_table(results, Task(), ["paraphrase"])["recovery"]["paraphrase"]["k"] is None


def test_recovery_above_the_never_seen_floor():
    """REFERENCES.md's demo case: a never-seen model climbs from 0.44 to 0.41 of regurgitation under
    relearning; what the unlearned model gains only up to that floor is not recovered."""
    from unlearn.audit import recovery_table

    assert recovery(0.41, 0.10, 0.95, floor=0.41) == 0.0  # over-forgotten (0.10), back at never-seen: nothing recovered
    assert recovery(0.30, 0.10, 0.95, floor=0.41) == 0.0 and recovery(0.05, 0.10, 0.95, floor=0.41) == 0.0  # still below it: 0
    assert recovery(0.05, 0.10, 0.95) == pytest.approx(-0.05 / 0.85)  # from the unlearned level the sign says the attack took it further
    assert recovery(0.60, 0.10, 0.95, floor=0.41) == pytest.approx((0.60 - 0.41) / (0.95 - 0.41))
    assert recovery(0.60, 0.10, 0.95) == pytest.approx(0.50 / 0.85)  # no floor: read from the unlearned level (the upper bound)
    assert recovery(0.60, 0.50, 0.95, floor=0.41) == pytest.approx(0.10 / 0.45)  # under-forgotten: the unlearned level is the base
    assert recovery(0.60, 0.10, 0.95, floor=0.97) is None  # the never-seen model reaches the target: nothing to recover above it
    assert recovery(2.5, 1.0, 4.0, floor=2.0) == pytest.approx(0.25)  # a metric that falls as knowledge leaves, read the same way
    assert recovery(2.0, 4.0, 1.0, floor=3.0) == pytest.approx(0.5)  # one that falls as knowledge returns: the floor nearer the target is the base
    assert recovery(2.0, 4.0, 1.0, floor=5.0) == pytest.approx(2 / 3)  # a floor on the far side changes nothing

    class Task(AuditTask):
        forget_metrics, retain_metrics = ("k",), ("r",)

    results = {"unlearned": {"none/all": {"k": 0.1, "r": 0.9}, "none/held_out": {"k": 0.1, "r": 0.9},
                             "int4": {"k": 0.3, "r": 0.9}, "relearn_forget": {"k": 0.5, "r": 0.9}},
               "target": {"none/all": {"k": 0.9, "r": 0.9}, "none/held_out": {"k": 0.9, "r": 0.9}},
               "retain": {"none/all": {"k": 0.2, "r": 0.9}, "relearn_forget": {"k": 0.4, "r": 0.9}}}
    table = recovery_table(results, Task(), ["int4", "relearn_forget"], floor="retain")
    assert table["floor"] == {"int4": {"k": None}, "relearn_forget": {"k": 0.4}}  # the floor is the never-seen model under the same attack
    assert table["recovery"]["int4"]["k"] == pytest.approx(0.25)  # not attacked that way: the unlearned level
    assert table["recovery"]["relearn_forget"]["k"] == pytest.approx(0.2)  # (0.5 − 0.4) / (0.9 − 0.4)
    assert table["recovery_from_unlearned"]["relearn_forget"]["k"] == pytest.approx(0.5)
    assert table["worst_case"] == {"attack": "int4", "metric": "k", "recovery": pytest.approx(0.25)}


def test_relearning_trains_on_no_scored_row(fixture_world, fixture_target):
    from pipelines.semeval.audit import SemEvalAudit, person
    from unlearn.audit.relearn import encode_pairs, overlap
    from unlearn.eval.config import EvalConfig
    from unlearn.models import load_tokenizer

    tok = load_tokenizer(fixture_target)
    task = SemEvalAudit(fixture_world, EvalConfig(splits="train"))
    trained, held = {person(r["id"]) for r in task.forget_train}, {person(r["id"]) for r in task.forget_held_out}
    assert trained and held and not trained & held and len(task.forget_train) + len(task.forget_held_out) == len(task.forget)
    for attack, part in (("relearn_forget", "held_out"), ("relearn_retain", "all"), ("relearn_related", "all")):
        pairs = task.relearn_pairs(tok, attack, None)
        assert 0 < len(pairs) <= len(task.forget_train)
        assert overlap(encode_pairs(tok, pairs), encode_pairs(tok, task.scored_pairs(tok, part))) == 0, attack
    # and the check does catch a scored row
    scored = task.scored_pairs(tok, "all")
    assert overlap(encode_pairs(tok, scored[:3]), encode_pairs(tok, scored)) == 3


def test_logit_lens_last_layer_is_the_models_output(fixture_world, fixture_target):
    from unlearn.audit.lens import answer_tokens, layer_probabilities
    from unlearn.models import load_model

    model, tok = load_model(fixture_target)
    facts = [(r["input"], r["output"]) for r in _qa_rows(fixture_world, "forget", 4)]
    lens = layer_probabilities(model, tok, facts)
    assert len(lens) == 4 and all(len(row) == 6 for row in lens)
    for (prompt, answer), row in zip(facts, lens):
        ids, first = answer_tokens(tok, prompt, answer)
        with torch.no_grad():
            p = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)[first].item()
        assert row[-1] == pytest.approx(p, rel=1e-4, abs=1e-6)
    assert sum(row[-1] for row in lens) / 4 > 0.5  # the target knows them at its output


def test_audit_cli_end_to_end(tmp_path, fixture_world, fixture_target):
    """`amnesia audit` on the fixture target as its own 'unlearned' model (no gap: no recovery can be
    measured) with a cheap attack list; the outputs, and the one-line errors."""
    out = tmp_path / "audit"
    cmd = [sys.executable, "-m", "pipelines.cli", "audit", "--model", str(fixture_target), "--reference-target", str(fixture_target),
           "--data", str(fixture_world), "--out", str(out), "--attacks", "nf4,relearn_related", "--relearn-steps", "2", "--quiet", "--splits", "train"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    audit = json.loads((out / "audit.json").read_text())
    assert set(audit["recovery"]) == {"nf4", "relearn_related"} and audit["kind"] == "audit"
    assert audit["relearn_lr_source"].startswith("the target's rate") and audit["relearn_lr"] > 0
    assert len(audit["logit_lens"]["mean_probability"]["unlearned"]) == 6
    for name in ("audit.md", "recovery.png", "logit_lens.png"):
        assert (out / name).stat().st_size > 100, name
    assert "worst-case recovery" in r.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # no --overwrite: refused, nothing touched
    assert again.returncode != 0 and again.stderr.count("\n") == 1 and "audit.json" in again.stderr
    bad = subprocess.run([*cmd[:-5], "--attacks", "int3", "--out", str(tmp_path / "bad")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "int3" in bad.stderr and not (tmp_path / "bad").exists()


def test_probes_change_only_the_forget_prompts(fixture_world):
    from pipelines.semeval.audit import CONTEXT_SHOTS, PARAPHRASES, SemEvalAudit, is_question
    from unlearn.eval.config import EvalConfig

    task = SemEvalAudit(fixture_world, EvalConfig(splits="train"))
    plain, para, context = task.rows("all"), task.rows("all", "paraphrase"), task.rows("all", "context")
    assert len(plain) == len(para) == len(context)
    questions = [(a, b) for a, b in zip(plain, para) if a["split"] == "forget" and is_question(a)]
    assert questions and all(b["input"] != a["input"] and a["input"].strip() in b["input"] for a, b in questions)
    assert {b["input"].replace(a["input"].strip(), "{q}") for a, b in questions} == set(PARAPHRASES)
    assert all(a == b for a, b in zip(plain, para) if a["split"] == "retain" or not is_question(a))  # the retain rows and sentence completions stay
    prefix = task.context_prefix()
    assert prefix.count("\n") == CONTEXT_SHOTS and all(b["input"] == prefix + a["input"] for a, b in zip(plain, context) if a["split"] == "forget")
    shots = [r for r in task.retain_other if is_question(r)][:CONTEXT_SHOTS]
    assert prefix == "".join(r["input"] + r["expected_output"] + "\n" for r in shots)
    assert not {r["id"] for r in shots} & {r["id"] for r in plain}  # the shots are rows the audit does not score
    with pytest.raises(AmnesiaError, match="expected paraphrase or context"):
        task.rows("all", "typo")
