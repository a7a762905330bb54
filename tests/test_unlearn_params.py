"""Layer specs, module discovery across architectures, freezing, LoRA targets."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from tracing.errors import AmnesiaError
from tracing.layers import LayerSelection
from unlearn.params import (
    apply_lora,
    count_parameters,
    find_decoder_layers,
    format_layers,
    lora_targets,
    parse_layers,
    resolve_kind,
    select_parameters,
    selected_modules,
)


def tiny(arch: str, layers: int = 3):
    """A randomly initialised 3-layer model of ``arch`` (seconds to build, never downloaded)."""
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=64, num_hidden_layers=layers, num_attention_heads=2, hidden_size=16)
    if arch == "olmo":
        return tf.OlmoForCausalLM(tf.OlmoConfig(intermediate_size=32, num_key_value_heads=2, **common))
    if arch == "olmo2":
        return tf.Olmo2ForCausalLM(tf.Olmo2Config(intermediate_size=32, num_key_value_heads=2, **common))
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(intermediate_size=32, num_key_value_heads=1, **common))
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=64, n_layer=layers, n_head=2, n_embd=16, n_positions=32))
    if arch == "pythia":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(intermediate_size=32, **common))
    raise ValueError(arch)


EXPECTED = {
    "olmo": ("model.layers", "mlp", "self_attn"),
    "olmo2": ("model.layers", "mlp", "self_attn"),
    "llama": ("model.layers", "mlp", "self_attn"),
    "gpt2": ("transformer.h", "mlp", "attn"),
    "pythia": ("gpt_neox.layers", "mlp", "attention"),
}


def test_parse_layers_specs(tmp_path):
    assert parse_layers("0-5", 16).layers == [0, 1, 2, 3, 4, 5]
    assert parse_layers("0,1,2,7", 16).layers == [0, 1, 2, 7]
    assert parse_layers(" 7, 0-2 ,1", 16).layers == [0, 1, 2, 7]
    assert parse_layers("all", 4).layers == [0, 1, 2, 3]
    assert parse_layers([3, 1, 1], 4).layers == [1, 3]
    assert format_layers([0, 1, 2, 3, 7, 9, 10]) == "0-3,7,9-10"
    sel = LayerSelection(kind="attn", layers=[2, 3], method="window", n_layers=6)
    sel.save(tmp_path / "layers.json")
    spec = parse_layers(str(tmp_path / "layers.json"), 6)
    assert spec.layers == [2, 3] and spec.selection.kind == "attn"
    assert parse_layers(tmp_path, 6).layers == [2, 3]  # a trace folder holding layers.json
    assert resolve_kind("auto", spec) == "attn"
    assert resolve_kind("mlp", spec) == "mlp"
    LayerSelection(kind="hidden", layers=[1], method="window").save(tmp_path / "h.json")
    assert resolve_kind("auto", parse_layers(str(tmp_path / "h.json"), 6)) == "mlp"
    assert resolve_kind("auto", parse_layers("0-2", 6)) == "mlp"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("0-9", "layers '0-9': layer 6 is out of range for a model with 6 layers (valid: 0-5)"),
        ("5-2", "layers '5-2': range 5-2 runs backwards (write 2-5)"),
        ("first", "layers 'first': expected all, a range like 0-5, a list like 0,1,2,7, or the path of a layers.json"),
        ("missing/layers.json", "missing/layers.json: layers file does not exist (expected a layers.json from `amnesia trace`)"),
        ([], "layers []: expected at least one layer"),
        ([-1], "layers '-1': layer -1 is out of range for a model with 6 layers (valid: 0-5)"),
    ],
)
def test_parse_layers_errors(spec, message):
    with pytest.raises(AmnesiaError) as err:
        parse_layers(spec, 6)
    assert str(err.value) == message


def test_layers_file_from_another_model(tmp_path):
    LayerSelection(kind="mlp", layers=[0, 1], method="window", n_layers=16).save(tmp_path / "layers.json")
    with pytest.raises(AmnesiaError, match="selection was made on a model with 16 layers, this model has 6"):
        parse_layers(str(tmp_path / "layers.json"), 6)


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_module_discovery_across_architectures(arch):
    model = tiny(arch)
    prefix, mlp, attn = EXPECTED[arch]
    assert find_decoder_layers(model)[0] == prefix
    assert list(selected_modules(model, [0, 2], "mlp")) == [f"{prefix}.0.{mlp}", f"{prefix}.2.{mlp}"]
    assert list(selected_modules(model, [1], "attn")) == [f"{prefix}.1.{attn}"]
    assert list(selected_modules(model, [1], "all")) == [f"{prefix}.1"]
    sel = select_parameters(model, [1], "mlp")
    expected = sum(p.numel() for p in selected_modules(model, [1], "mlp")[f"{prefix}.1.{mlp}"].parameters())
    assert sel.trainable == expected == count_parameters(model)[0]
    assert all(n.startswith(f"{prefix}.1.{mlp}.") for n, p in model.named_parameters() if p.requires_grad)
    assert sel.share == pytest.approx(expected / sum(p.numel() for p in model.parameters()))


def test_select_parameters_logs_count_and_share(caplog):
    model = tiny("olmo")
    with caplog.at_level(logging.INFO, logger="unlearn.params"):
        sel = select_parameters(model, [0, 1], "all")
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert sel.trainable == 2 * per_layer
    assert f"trainable: all of layers 0-1 (2 modules): {2 * per_layer:,} of {sel.total:,} parameters ({100 * sel.share:.2f}%)" in caplog.text


def test_missing_kind_and_layer_list_are_errors():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 2})()
            self.blocks = nn.ModuleList([Block(), Block()])

    model = Model()
    assert list(selected_modules(model, [1], "mlp")) == ["blocks.1.mlp"]
    with pytest.raises(AmnesiaError, match=r"^Block: has no attn block \(its submodules: mlp \(Linear\), norm \(LayerNorm\)\); use --kind all or another kind$"):
        selected_modules(model, [0], "attn")
    with pytest.raises(AmnesiaError, match="layer 2 is out of range for a model with 2 layers"):
        selected_modules(model, [2], "mlp")
    with pytest.raises(AmnesiaError, match="kind 'ffn': expected one of mlp, attn, all"):
        selected_modules(model, [0], "ffn")
    model.config.num_hidden_layers = 5
    with pytest.raises(AmnesiaError, match="found no list of 5 decoder layers"):
        find_decoder_layers(model)


@pytest.mark.parametrize("arch", ["olmo", "gpt2"])
def test_lora_targets_and_adapters(arch):
    model = tiny(arch)
    prefix, mlp, _ = EXPECTED[arch]
    targets = lora_targets(model, [0, 2], "mlp")
    assert targets and all(t.startswith((f"{prefix}.0.{mlp}.", f"{prefix}.2.{mlp}.")) for t in targets)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model, sel = apply_lora(model, [0, 2], "mlp", r=2, alpha=4)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(f".{prefix.split('.')[-1]}.0.{mlp}." in n or f".{prefix.split('.')[-1]}.2.{mlp}." in n for n in trainable)
    assert sel.lora["targets"] == targets and sel.trainable == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    # adapters start as a no-op (B = 0): merged weights equal the originals
    merged = peft_model.merge_and_unload()
    after = dict(merged.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
