"""Model loading: devices, dtypes, safetensors-only, pad fallback, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tracing.errors import AmnesiaError
from unlearn.models import ModelOptions, ensure_pad_token, load_model, resolve_device, resolve_dtype


def test_device_and_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16") == torch.float16
    with pytest.raises(AmnesiaError, match="--dtype 'fp8'"):
        resolve_dtype("fp8")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(AmnesiaError, match="CUDA is not available"):
            resolve_device("cuda")


def test_load_options(fixture_target):
    model, tok = load_model(fixture_target, ModelOptions(device="cpu", dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training
    assert tok.pad_token_id is not None and model.config.pad_token_id == tok.pad_token_id
    model, _ = load_model(fixture_target, ModelOptions(device="cpu"), for_training=True)
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_pad_fallback(olmo_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(olmo_tokenizer_dir)
    tok.pad_token = None
    assert ensure_pad_token(tok).pad_token == "<|padding|>"
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "</s>": 1}, unk_token="a")), eos_token="</s>")
    assert ensure_pad_token(plain).pad_token == "</s>"  # no <|padding|> in the vocabulary: EOS


def test_load_errors(tmp_path, fixture_target):
    with pytest.raises(AmnesiaError, match="model path does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AmnesiaError, match="no config.json"):
        load_model(tmp_path / "empty")
    odd = tmp_path / "odd"
    shutil.copytree(fixture_target, odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["model_type"] = "not-a-real-arch"
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AmnesiaError, match="model_type 'not-a-real-arch' is not an architecture"):
        load_model(odd)
    pickled = tmp_path / "pickled"
    shutil.copytree(fixture_target, pickled)
    state = {k: v.clone() for k, v in load_model(fixture_target)[0].state_dict().items()}
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(AmnesiaError, match="only pickle weights .* pass --allow-pickle"):
        load_model(pickled)
    model, _ = load_model(pickled, ModelOptions(allow_pickle=True))
    assert model.config.num_hidden_layers == 6
