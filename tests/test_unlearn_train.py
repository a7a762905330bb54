"""The unlearning stage on the fixture target: forgetting, baselines, LoRA, resume, guards, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from pipelines.target import qa_exact_match
from tracing.errors import AmnesiaError
from unlearn.api import run_unlearning, train_unlearning
from unlearn.data import load_semeval
from unlearn.dataset import encode_split
from unlearn.losses import sequence_nll
from unlearn.models import ModelOptions, load_model
from unlearn.params import selected_modules
from unlearn.config import UnlearnConfig
from unlearn.trainer import STATE_FILE, latest_checkpoint, list_checkpoints

CPU = ModelOptions(device="cpu", dtype="float32")
# Small, fast settings for the 6-layer fixture (the paper's lr 1.5e-5 is for OLMo-1B/7B).
FAST = dict(layers="0-2", kind="mlp", batch_size=8, grad_accum=1, max_length=128, lr=1e-3, logging_steps=50, seed=0)


@pytest.fixture(scope="module")
def data(fixture_world):
    return load_semeval(fixture_world)


def load(path):
    return load_model(path, CPU, for_training=True)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def selected_names(model, layers, kind="mlp") -> set[str]:
    prefixes = tuple(f"{name}." for name in selected_modules(model, layers, kind))
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def forget_ce(model, tok, rows) -> float:
    """Mean output-token CE of ``rows`` (SemEval layout) under ``model``."""
    enc = encode_split(tok, rows, max_length=128, prompt_format="raw")
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for ids, labels in zip(enc.input_ids, enc.labels):
            nll, n = sequence_nll(model(torch.tensor([ids])).logits, torch.tensor([labels]))
            total, count = total + nll.item(), count + n.item()
    return total / count


# --------------------------------------------------------------------------- the method


def test_sha256_with_traced_layers_forgets_and_keeps_retain(fixture_world, fixture_target, data, tmp_path):
    """The issue's main check: forget QA exact match falls >= 0.5, retain keeps >= 80 %."""
    from tracing import SelectionConfig, TraceConfig, aggregate, facts_from_rows, select_layers, trace_facts

    model, tok = load_model(fixture_target, CPU)
    facts, _ = facts_from_rows(data.get("forget", "train"))
    traced = trace_facts(model, tok, facts[:12], TraceConfig(kinds=("mlp",), samples=3, window=1), progress=False)
    selection = select_layers(aggregate(traced.traces), SelectionConfig(k=3, evidence=False), model=str(fixture_target))
    selection.save(tmp_path / "layers.json")
    before = qa_exact_match(model, tok, data)

    # the default recipe: calibrated forgetting, and the best validation step (once per epoch)
    config = UnlearnConfig(**{**FAST, "layers": str(tmp_path / "layers.json"), "kind": "auto", "lr": 1e-3, "epochs": 12, "eval_steps": 15, "patience": 4})
    manifest = run_unlearning(fixture_target, fixture_world, tmp_path / "out", config, model_options=CPU, progress=False)
    unlearned, tok2 = load(tmp_path / "out")
    after = qa_exact_match(unlearned, tok2, data)
    report = f"layers {selection.layers}: before {before}, after {after}"
    assert before["forget"] - after["forget"] >= 0.5, report
    assert after["retain"] >= 0.8 * before["retain"], report

    # only the traced layers' MLPs changed; everything else is bit-identical
    old, new = weights(fixture_target), weights(tmp_path / "out")
    trainable = selected_names(unlearned, selection.layers)
    assert set(old) == set(new) and trainable
    assert all(torch.equal(old[n], new[n]) for n in old if n not in trainable)
    assert all(not torch.equal(old[n], new[n]) for n in trainable)

    written = json.loads((tmp_path / "out" / "unlearn.json").read_text())
    assert written == json.loads(json.dumps(manifest, default=str))
    assert written["method"] == "sha256" and written["kind"] == "mlp" and written["layers"] == selection.layers
    assert written["layers_file"]["method"] == "window"
    p = written["parameters"]
    assert p["trainable_parameters"] == sum(old[n].numel() for n in trainable)
    assert p["trainable_share"] == pytest.approx(p["trainable_parameters"] / p["total_parameters"])
    assert written["data_sizes"]["forget_rows"] == len(data.get("forget", "train")) + len(data.get("forget", "validation"))
    assert written["hyperparameters"]["lr"] == 1e-3 and written["seed"] == 0
    assert [e["epoch"] for e in written["per_epoch"]] == list(range(1, len(written["per_epoch"]) + 1)) and len(written["per_epoch"]) >= 6
    v = written["validation"]  # kept the best validation step; the curve is in unlearn.json
    assert v["best_step"] == max((h for h in v["history"] if h["step"] > 0), key=lambda h: h["final"])["step"]
    assert written["forget_target"]["source"].endswith("mia_data/validation/nonmember.jsonl") and len(written["forget_target"]["levels"]) > 2
    first, last = written["per_epoch"][0], written["per_epoch"][-1]
    assert first["alpha"] == pytest.approx(1.2) and first["alpha_highest"] == 1.2  # α_min during the first epoch
    assert written["alpha"]["l_ref"] == pytest.approx(first["ce_retain"])  # L_ref = mean retain CE of epoch 1
    assert last["ce_forget"] > 2 * first["ce_forget"]
    assert all(1.2 <= e["alpha_lowest"] <= e["alpha_highest"] <= 2.8 for e in written["per_epoch"])
    assert {"torch", "transformers", "selective-amnesia"} <= set(written["versions"])
    assert written["wall_time_s"] > 0 and written["source_model"] == str(fixture_target)
    assert not (tmp_path / "out.checkpoints").exists()


@pytest.mark.parametrize("method", ["ga", "gd", "kl", "npo", "sha256", "simnpo", "wga", "satimp", "ceu", "undial", "pdu", "rmu", "idkdpo"])
def test_every_method_trains_only_the_selected_tensors(method, fixture_target, data):
    model, tok = load(fixture_target)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = UnlearnConfig(**{**FAST, "method": method, "max_steps": 3, "layers": "1,3"})
    run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, device="cpu")
    trainable = selected_names(model, [1, 3])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    # optimizer state exists only for trainable parameters
    opt = getattr(run.trainer.optimizer, "optimizer", run.trainer.optimizer)
    by_id = {id(p): n for n, p in model.named_parameters()}
    in_groups = {by_id[id(p)] for g in opt.param_groups for p in g["params"]}
    assert in_groups == trainable and {by_id[id(p)] for p in opt.state} == trainable
    for name, p in model.named_parameters():
        if name in trainable:
            assert not torch.equal(p, initial[name]), name
        else:
            assert torch.equal(p, initial[name]), name
    epoch = run.report["per_epoch"][0]
    assert run.report["steps"] == 3 and run.report["stopped"] is None
    expected = {"ga": {"ce_forget"}, "gd": {"ce_forget", "ce_retain"}, "kl": {"ce_forget", "ce_retain", "kl_retain"},
                "npo": {"ce_forget", "ce_retain", "npo"}, "sha256": {"ce_forget", "ce_retain", "alpha"}, "simnpo": {"ce_forget", "ce_retain", "simnpo"},
                "wga": {"ce_forget", "ce_retain", "wga"}, "satimp": {"ce_forget", "ce_retain", "satimp"}, "ceu": {"ce_forget", "ceu"},
                "undial": {"ce_forget", "undial"}, "pdu": {"ce_forget", "ce_retain", "pdu", "lambda"},
                "rmu": {"ce_forget", "ce_retain", "rmu_forget", "rmu_retain"}, "idkdpo": {"ce_forget", "ce_retain", "idkdpo"}}[method]
    assert expected <= set(epoch) and all(math.isfinite(epoch[k]) for k in expected)
    if method == "npo":  # at the start θ = reference, so the NPO term is (2/β)·log 2
        assert epoch["npo"] == pytest.approx(2 / 0.1 * math.log(2), rel=0.05)
    if method == "idkdpo":  # (2/β)·log 2 at the start, falling as the refusal becomes the preferred answer
        assert 0 < epoch["idkdpo"] < 2 / 0.1 * math.log(2)
    if method == "kl":
        assert 0 <= epoch["kl_retain"] < 1.0


def test_gradient_checkpointing_and_bf16_autocast(fixture_target, data):
    def train(**extra):
        model, tok = load(fixture_target)
        config = UnlearnConfig(**{**FAST, "max_steps": 2, **extra})
        run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, device="cpu")
        return model, run.report

    plain, _ = train()
    checkpointed, _ = train(gradient_checkpointing=True)  # recomputation gives the same gradients
    assert getattr(checkpointed, "is_activation_checkpointing", None) or checkpointed.is_gradient_checkpointing
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), checkpointed.parameters()))
    mixed, report = train(bf16=True)
    assert report["stopped"] is None and math.isfinite(report["per_epoch"][0]["loss"])
    assert next(mixed.parameters()).dtype == torch.float32  # float32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), mixed.parameters()))


def test_lora_run_merges_into_a_plain_model(fixture_world, fixture_target, data, tmp_path):
    config = UnlearnConfig(**{**FAST, "lora": True, "lora_r": 4, "lora_alpha": 8, "lr": 1e-2, "max_steps": 24})
    manifest = run_unlearning(fixture_target, fixture_world, tmp_path / "lora", config, model_options=CPU, progress=False)
    old, new = weights(fixture_target), weights(tmp_path / "lora")
    assert set(new) == set(old)  # no adapter tensors: a plain model folder
    model, tok = load(tmp_path / "lora")
    trainable = selected_names(model, [0, 1, 2])
    assert all(torch.equal(old[n], new[n]) for n in old if n not in trainable)
    assert any(not torch.equal(old[n], new[n]) for n in trainable)
    p = manifest["parameters"]
    assert p["lora"]["r"] == 4 and all(".mlp." in t for t in p["lora"]["targets"])
    assert p["trainable_parameters"] == sum(4 * (a + b) for a, b in [(128, 512), (128, 512), (512, 128)]) * 3
    assert "peft" in manifest["versions"]
    base, _ = load(fixture_target)
    forget = data.get("forget", "train")
    assert forget_ce(model, tok, forget) > forget_ce(base, tok, forget) + 0.5


# --------------------------------------------------------------------------- resume


class Interrupted(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"simulated crash after checkpoint {self.step}")


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(fixture_world, fixture_target, tmp_path):
    # 120 forget rows (train + validation) / 16 = 8 micro-batches = 4 optimizer steps per epoch;
    # 2 epochs; the interruption (after step 6) falls in epoch 2, after L_ref was fixed.
    config = UnlearnConfig(**{**FAST, "batch_size": 16, "grad_accum": 2, "epochs": 2, "save_steps": 2, "lr": 5e-4})
    full = run_unlearning(fixture_target, fixture_world, tmp_path / "full", config, model_options=CPU, progress=False)

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run_unlearning(fixture_target, fixture_world, out, config, model_options=CPU, progress=False, callbacks=[InterruptAfterSave(6)])
    assert not out.exists()
    ckpts = tmp_path / "resumed.checkpoints"
    assert [p.name for p in list_checkpoints(ckpts)[0]] == ["checkpoint-4", "checkpoint-6"]
    # a checkpoint cut short by a crash (no amnesia_state.json) is not resumed from
    (ckpts / "checkpoint-7").mkdir()
    (ckpts / "checkpoint-7" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(ckpts).name == "checkpoint-6"
    with pytest.raises(AmnesiaError, match="holds checkpoints of an earlier run; pass --resume to continue it or --overwrite to start over"):
        run_unlearning(fixture_target, fixture_world, out, config, model_options=CPU, progress=False)

    resumed = run_unlearning(fixture_target, fixture_world, out, config, model_options=CPU, progress=False, resume=True)
    assert resumed["resumed_from"] == str(ckpts / "checkpoint-6") and resumed["steps"] == full["steps"] == 8
    a, b = weights(tmp_path / "full"), weights(out)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert resumed["per_epoch"] == full["per_epoch"] and resumed["alpha"] == full["alpha"]
    assert not ckpts.exists()  # removed after success


def test_lora_resume_is_exact(fixture_world, fixture_target, tmp_path):
    config = UnlearnConfig(**{**FAST, "lora": True, "lr": 2e-3, "max_steps": 4, "save_steps": 2})
    run_unlearning(fixture_target, fixture_world, tmp_path / "full", config, model_options=CPU, progress=False)
    with pytest.raises(Interrupted):
        run_unlearning(fixture_target, fixture_world, tmp_path / "res", config, model_options=CPU, progress=False, callbacks=[InterruptAfterSave(2)])
    assert (tmp_path / "res.checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()  # adapters only
    run_unlearning(fixture_target, fixture_world, tmp_path / "res", config, model_options=CPU, progress=False, resume=True)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "res")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_resume_refuses_other_settings_and_missing_checkpoints(fixture_world, fixture_target, tmp_path):
    config = UnlearnConfig(**{**FAST, "max_steps": 2, "save_steps": 1, "keep_checkpoints": True})
    run_unlearning(fixture_target, fixture_world, tmp_path / "a", config, model_options=CPU, progress=False)
    ckpt = latest_checkpoint(tmp_path / "a.checkpoints")
    assert ckpt.name == "checkpoint-1" and (ckpt / STATE_FILE).is_file()
    other = UnlearnConfig(**{**FAST, "max_steps": 2, "save_steps": 1, "lr": 2e-3})
    with pytest.raises(AmnesiaError, match=r"checkpoint-1: was written with lr=0.001, this run has lr=0.002"):
        run_unlearning(fixture_target, fixture_world, tmp_path / "b", other, model_options=CPU, progress=False, resume=True, checkpoint_dir=tmp_path / "a.checkpoints")
    with pytest.raises(AmnesiaError, match="no complete checkpoint to resume from"):
        run_unlearning(fixture_target, fixture_world, tmp_path / "c", config, model_options=CPU, progress=False, resume=True)


# --------------------------------------------------------------------------- guards


class Snapshot(TrainerCallback):
    def __init__(self, model, step):
        self.model, self.step, self.state = model, step, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.state = {n: p.detach().clone() for n, p in self.model.named_parameters()}


def test_nan_loss_stops_and_keeps_the_last_good_weights(fixture_target, data, monkeypatch):
    from unlearn.methods import get_method

    calls = {"n": 0}
    ga = get_method("ga")
    real = ga.loss

    def nan_on_third(self, batch):
        calls["n"] += 1
        loss, logs = real(self, batch)
        return loss * (float("nan") if calls["n"] == 3 else 1.0), logs

    monkeypatch.setattr(ga, "loss", nan_on_third)
    model, tok = load(fixture_target)
    snap = Snapshot(model, 2)
    run = train_unlearning(model, tok, data.get("forget", "train"), None, UnlearnConfig(**{**FAST, "method": "ga", "max_steps": 6}), progress=False, device="cpu", callbacks=[snap])
    assert run.report["stopped"] == "non-finite loss at step 3 (epoch 0); kept the weights of step 2"
    assert calls["n"] == 3
    assert all(torch.equal(p, snap.state[n]) for n, p in model.named_parameters())


def test_nan_gradient_stops_and_keeps_the_last_good_weights(fixture_target, data):
    model, tok = load(fixture_target)
    snap = Snapshot(model, 2)

    class PoisonGradients(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                p = model.model.layers[0].mlp.up_proj.weight
                p.register_hook(lambda g: torch.full_like(g, float("inf")))

    run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), UnlearnConfig(**{**FAST, "method": "gd", "max_steps": 6}),
                           progress=False, device="cpu", callbacks=[snap, PoisonGradients()])
    assert run.report["stopped"] == "non-finite gradient at step 3; kept the weights of step 2"
    assert all(torch.equal(p, snap.state[n]) for n, p in model.named_parameters())


def test_a_forget_target_below_every_row_stops_gradient_ascent(fixture_target, data):
    """The manual form of calibration: a level every row already exceeds leaves nothing to push."""
    model, tok = load(fixture_target)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = UnlearnConfig(**{**FAST, "method": "ga", "max_steps": 2, "forget_target": 1e-6, "forget_mode": "stop"})
    run = train_unlearning(model, tok, data.get("forget", "train"), None, config, progress=False, device="cpu")
    assert run.report["per_epoch"][0]["forget_reached"] == 1.0
    assert all(torch.equal(p, initial[n]) for n, p in model.named_parameters())
    # a high level stops nothing at the start
    model, tok = load(fixture_target)
    config = UnlearnConfig(**{**FAST, "method": "ga", "max_steps": 2, "forget_target": 50.0})
    run = train_unlearning(model, tok, data.get("forget", "train"), None, config, progress=False, device="cpu")
    assert run.report["per_epoch"][0]["forget_reached"] == 0.0


# --------------------------------------------------------------------------- errors


def test_clear_errors(fixture_world, fixture_target, data, tmp_path):
    def err(**kwargs):
        args = dict(model_path=fixture_target, data=fixture_world, out=tmp_path / "out", config=UnlearnConfig(**{**FAST, "max_steps": 1}))
        args.update(kwargs)
        with pytest.raises(AmnesiaError) as e:
            run_unlearning(**args, model_options=CPU, progress=False)
        return str(e.value)

    assert err(out=fixture_target) == f"--out {fixture_target}: is inside the input model's folder {fixture_target}; write the unlearned model somewhere else"
    assert "is inside the input model's folder" in err(out=fixture_target / "sub")
    assert err(out=fixture_target.parent) == f"--out {fixture_target.parent}: contains the input model {fixture_target}; replacing it would delete the input"
    assert err(out=fixture_world / "model") == f"--out {fixture_world / 'model'}: is inside the data folder {fixture_world}; write the unlearned model somewhere else"
    assert err(data=tmp_path / "missing") == f"{tmp_path / 'missing'}: data folder does not exist"
    assert err(config=UnlearnConfig(**{**FAST, "layers": "0-9"})) == "layers '0-9': layer 6 is out of range for a model with 6 layers (valid: 0-5)"
    assert err(config=UnlearnConfig(**{**FAST, "kind": "ffn"})) == "kind 'ffn': expected one of auto, mlp, attn, all"
    assert err(config=UnlearnConfig(**{**FAST, "method": "sgd"})) == "method 'sgd': unknown (did you mean gd?); expected one of sha256, ga, gd, kl, npo, simnpo, wga, satimp, ceu, undial, pdu, rmu, idkdpo"
    assert err(data=(data.get("forget", "train"), None)) == "method sha256: needs retain rows (retain_train), but none were given"
    assert err(model_path=tmp_path / "nomodel") == f"{tmp_path / 'nomodel'}: model path does not exist"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert err(out=tmp_path / "taken") == f"{tmp_path / 'taken'} already exists; pass --overwrite to replace it"
    assert err(resume=True) == f"{tmp_path / 'out.checkpoints'}: no complete checkpoint to resume from (a checkpoint is complete once it holds amnesia_state.json)"
    assert not (tmp_path / "out").exists()


def test_cli_unlearn_and_one_line_errors(fixture_world, fixture_target, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "cli"
    (out).mkdir()  # an empty folder counts as absent
    args = ["unlearn", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--layers", "0-1", "--max-steps", "2",
            "--batch-size", "8", "--grad-accum", "1", "--lr", "1e-3", "--max-length", "128", "--quiet", "--device", "cpu", "--method", "gd"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "method gd: mlp of layers [0, 1]" in captured.out and f"wrote {out}" in captured.out
    assert "trainable: mlp of layers 0-1 (2 modules)" in captured.err
    assert {"model.safetensors", "config.json", "tokenizer.json", "unlearn.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "unlearn.json").read_text())["hyperparameters"]["method"] == "gd"

    assert main(args) == 2  # exists now
    assert capsys.readouterr().err.strip() == f"amnesia unlearn: error: {out} already exists; pass --overwrite to replace it"
    bad = [a if a != "0-1" else "12" for a in args]
    assert main(bad + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "amnesia unlearn: error: layers '12': layer 12 is out of range for a model with 6 layers (valid: 0-5)"
    assert main(args + ["--resume", "--overwrite"]) == 2
    assert "--resume and --overwrite contradict each other" in capsys.readouterr().err


def test_cli_layers_auto_traces_first(fixture_world, fixture_target, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "auto"
    assert main(["unlearn", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--layers", "auto",
                 "--trace-max-facts", "3", "--trace-samples", "2", "--trace-k", "2", "--max-steps", "1", "--batch-size", "8",
                 "--grad-accum", "1", "--quiet", "--device", "cpu"]) == 0
    selection = json.loads((tmp_path / "auto.trace" / "layers.json").read_text())
    manifest = json.loads((out / "unlearn.json").read_text())
    assert len(selection["layers"]) == 2 and manifest["layers"] == selection["layers"] and manifest["kind"] == "mlp"
    assert manifest["layers_source"] == str(tmp_path / "auto.trace" / "layers.json")


def test_sequential_schedule_trains(fixture_target, data):
    model, tok = load(fixture_target)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = UnlearnConfig(**{**FAST, "schedule": "sequential", "chunk_size": 32, "retain_ratio": 2, "epochs": 2, "batch_size": 16, "lr": 5e-4})
    run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, device="cpu")
    assert run.report["steps"] == 12 and [e["epoch"] for e in run.report["per_epoch"]] == [1, 2]
    trainable = selected_names(model, [0, 1, 2])
    assert all(torch.equal(p, initial[n]) != (n in trainable) for n, p in model.named_parameters())
    with pytest.raises(AmnesiaError, match="epochs 1.5: the sequential schedule needs a whole number of passes per chunk"):
        UnlearnConfig(schedule="sequential", epochs=1.5).check()


def test_semeval_submission_entry_point(fixture_world, fixture_target, data, tmp_path):
    from unlearn.semeval import paper_config, unlearn

    for kind in ("forget", "retain"):
        folder = tmp_path / kind
        folder.mkdir()
        data.get(kind, "train").to_json(folder / f"{kind}.jsonl", lines=True)
    config = UnlearnConfig(**{**FAST, "max_steps": 2})
    manifest = unlearn(str(fixture_target), str(tmp_path / "submission"), str(tmp_path / "forget"), str(tmp_path / "retain"), config=config, progress=False)
    assert (tmp_path / "submission" / "model.safetensors").is_file()
    assert manifest["data"] == f"{tmp_path / 'forget'}, {tmp_path / 'retain'}" and manifest["data_sizes"]["retain_rows"] == len(data.get("retain", "train")) == 84
    paper = paper_config()
    assert (paper.method, paper.layers, paper.kind, paper.lr, paper.batch_size, paper.grad_accum, paper.epochs) == ("sha256", "0-5", "mlp", 1.5e-5, 12, 10, 8)


def test_group_by_length_trains_on_length_sorted_micro_batches(fixture_target, data, monkeypatch):
    import unlearn.api as api_module
    from unlearn.dataset import PairedCollator

    def train(group: bool):
        shapes = []

        class Recording(PairedCollator):
            def __call__(self, items):
                batch = super().__call__(items)
                if "retain_input_ids" in batch:  # a training batch (forget rows are also collated alone to measure them)
                    shapes.append((batch["forget_input_ids"].shape, batch["retain_input_ids"].shape))
                return batch

        monkeypatch.setattr(api_module, "PairedCollator", Recording)
        model, tok = load(fixture_target)
        config = UnlearnConfig(**{**FAST, "batch_size": 4, "grad_accum": 4, "max_steps": 2, "group_by_length": group})
        run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, device="cpu")
        assert run.report["stopped"] is None and math.isfinite(run.report["per_epoch"][0]["loss"])
        return [f[0] * f[1] + r[0] * r[1] for f, r in shapes[:8]], run.report

    plain, _ = train(False)
    grouped, report = train(True)
    assert len(plain) == len(grouped) == 8  # 2 steps × 4 micro-batches
    assert sum(grouped) < 0.9 * sum(plain)  # same rows per step, less padding
    assert report["hyperparameters"]["group_by_length"] is True


def test_rmu_moves_the_steered_layer_to_the_control_vector_on_forget_rows_only(fixture_target, data):
    """RMU at the trained layers 0-1 (steering layer 1, α 3 as the reference's large α on retain): the
    forget rows' layer-1 hidden states move towards c·u, the retain rows' stay near the initial
    model's (the tiny world's forget and retain rows share their question templates, so they move
    some: 0.36 against 1.51, measured)."""
    from unlearn.methods.rmu import control_vector

    model, tok = load(fixture_target)
    forget, retain = data.get("forget", "train"), data.get("retain", "train")

    def layer1(m, rows):
        enc = tok([rows[i]["input"] + rows[i]["output"] for i in range(min(16, len(rows)))], return_tensors="pt", padding=True)
        with torch.no_grad():
            h = m(**enc, output_hidden_states=True).hidden_states[2]
        return h, enc["attention_mask"].bool()

    u = control_vector(model.config.hidden_size, 2.0, 0)
    f0, f_mask = layer1(model, forget)
    r0, r_mask = layer1(model, retain)
    config = UnlearnConfig(**{**FAST, "method": "rmu", "layers": "0,1", "max_steps": 24, "lr": 3e-3, "method_args": {"alpha": 3}})
    train_unlearning(model, tok, forget, retain, config, progress=False, device="cpu")
    f1, _ = layer1(model, forget)
    r1, _ = layer1(model, retain)
    to_u_before = ((f0 - u) ** 2).mean(-1)[f_mask].mean().item()
    to_u_after = ((f1 - u) ** 2).mean(-1)[f_mask].mean().item()
    forget_moved = ((f1 - f0) ** 2).mean(-1)[f_mask].mean().item()
    retain_moved = ((r1 - r0) ** 2).mean(-1)[r_mask].mean().item()
    assert to_u_after < 0.5 * to_u_before, (to_u_before, to_u_after)  # measured: 5.19 -> 1.70
    assert retain_moved < 0.35 * forget_moved, (retain_moved, forget_moved)  # measured: 0.36 against 1.51
