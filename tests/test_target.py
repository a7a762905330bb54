"""The tiny target: memorization measured by greedy generation, HF + TransformerBridge loading."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.target import TargetConfig, make_target, qa_exact_match
from pipelines.world import WorldConfig, make_world
from tracing.errors import AmnesiaError
from unlearn.data import load_semeval
from unlearn.models import ModelOptions, load_model


def test_fixture_target_memorized(fixture_world, fixture_target):
    model, tok = load_model(fixture_target, ModelOptions(device="cpu"))
    em = qa_exact_match(model, tok, load_semeval(fixture_world))  # measured now, not read from the manifest
    assert em["forget"] >= 0.9 and em["retain"] >= 0.9, em
    manifest = json.loads((fixture_target / "target.json").read_text())
    assert manifest["steps"] <= TargetConfig().steps and manifest["train_rows"] == 240  # every row, train and validation
    assert manifest["prompt_format"] == "raw" and manifest["learning_rate"] == 3e-3
    assert (fixture_target / "model.safetensors").is_file()
    assert model.config.model_type == "olmo" and model.config.num_hidden_layers == 6 and model.config.hidden_size == 128


def test_fixture_target_loads_in_transformer_bridge(fixture_target):
    from transformers import AutoModelForCausalLM
    from transformer_lens.model_bridge import TransformerBridge

    hf = AutoModelForCausalLM.from_pretrained(fixture_target).eval()
    model, tok = load_model(fixture_target, ModelOptions(device="cpu"))
    ids = tok("What is the birth date of", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = hf(ids).logits
        bridge = TransformerBridge.boot_transformers(str(fixture_target), hf_model=model, tokenizer=tok)
        logits = bridge(ids)
    assert bridge.cfg.n_layers == 6
    assert torch.allclose(logits, expected, atol=1e-4)


def test_target_on_real_olmo_tokenizer_is_deterministic(tmp_path, olmo_tokenizer_dir):
    world = make_world(tmp_path / "w", WorldConfig(people=4, seed=0))
    config = TargetConfig(layers=2, hidden=32, heads=2, intermediate=64, steps=3, eval_every=3, tokenizer=str(olmo_tokenizer_dir))
    a = make_target(world, tmp_path / "a", config, progress=False)
    make_target(world, tmp_path / "b", config, progress=False)
    assert a["steps"] == 3
    wa = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "model.safetensors").read_bytes()
    model, tok = load_model(tmp_path / "a", ModelOptions(device="cpu"))
    assert model.config.vocab_size == 50304 and tok.pad_token == "<|padding|>" and tok.eos_token_id == 50279


def test_base_model_finetune_and_errors(tmp_path, fixture_world, fixture_target):
    out = tmp_path / "ft"
    manifest = make_target(fixture_world, out, TargetConfig(steps=2, eval_every=2, base_model=str(fixture_target)), progress=False)
    assert manifest["steps"] == 2 and (out / "model.safetensors").is_file()
    assert manifest["learning_rate"] == 5e-5  # a fine-tuning rate for a pretrained model, not the from-scratch 3e-3
    assert TargetConfig(base_model="m", lr=1e-4).learning_rate == 1e-4
    with pytest.raises(AmnesiaError, match="already exists"):
        make_target(fixture_world, out, TargetConfig(steps=1))
    with pytest.raises(AmnesiaError, match="not divisible by heads"):
        make_target(fixture_world, tmp_path / "x", TargetConfig(hidden=30, heads=4))
    with pytest.raises(AmnesiaError, match=r"target_em 0: expected a number in \(0, 1\]"):
        TargetConfig(target_em=0).check()
    with pytest.raises(AmnesiaError, match="prompt_format 'html': expected one of raw, chat"):
        TargetConfig(prompt_format="html").check()


class _Bar:
    """Records what make-target's progress bar is told (tqdm's interface, nothing drawn)."""

    made: list["_Bar"] = []

    def __init__(self, total=None, **kwargs):
        self.total, self.n, self.totals, self.closed_total = total, 0, [total], None
        _Bar.made.append(self)

    def update(self, n=1):
        self.n += n
        if self.total != self.totals[-1]:
            self.totals.append(self.total)

    def set_postfix(self, *args, **kwargs):
        pass

    def refresh(self):
        self.totals.append(self.total)

    def close(self):
        self.closed_total = self.total


def test_progress_bar_total_is_honest_when_training_stops_early(tmp_path, monkeypatch):
    import pipelines.target as target_module

    monkeypatch.setattr(target_module, "tqdm", _Bar)
    world = make_world(tmp_path / "w", WorldConfig(people=4, seed=0))
    config = TargetConfig(layers=2, hidden=32, heads=2, intermediate=64, steps=1500, eval_every=5, target_em=0.01)
    manifest = make_target(world, tmp_path / "t", config, progress=True)
    bar = _Bar.made[-1]
    assert bar.totals[0] == 5  # never the 1,500-step maximum: the next exact-match check
    assert bar.n == manifest["steps"] == bar.closed_total  # closed at the steps actually run
    assert manifest["steps"] < 1500 and manifest["steps"] % 5 == 0
