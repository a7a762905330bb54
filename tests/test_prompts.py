"""One prompt format for every stage: rendering, the run config, unlearn.json / scores.json and the mismatch warning."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.semeval.config import semeval_config_from_mapping as config_from_mapping
from pipelines.trace_stage import FactSource, TraceStageConfig
from tracing.errors import AmnesiaError
from unlearn.api import run_unlearning
from unlearn.data import load_semeval
from unlearn.eval import EvalConfig, run_evaluation
from unlearn.models import ModelOptions, load_model, load_tokenizer
from unlearn.prompts import format_mismatch, render_prompt, render_prompts, trained_format
from unlearn.config import UnlearnConfig

CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
CPU = ModelOptions(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def chat_target(fixture_target, tmp_path_factory):
    """The fixture target with a chat template in its tokenizer (as an instruct model has)."""
    out = tmp_path_factory.mktemp("chat") / "target"
    shutil.copytree(fixture_target, out)
    tok = load_tokenizer(out)
    tok.chat_template = CHAT
    tok.save_pretrained(out)
    return out


class _BosTokenizer:
    """A stand-in for a tokenizer that adds BOS itself and whose chat template writes it too (Llama 3)."""

    bos_token, bos_token_id, chat_template = "<s>", 1, "x"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "<s><user>" + messages[0]["content"] + "<assistant>"


def test_render_prompt_raw_chat_and_no_doubled_bos(chat_target):
    tok = load_tokenizer(chat_target)
    assert render_prompt(tok, "What is X?", "raw") == "What is X?"
    assert render_prompt(tok, "What is X?", "chat") == "<|user|>What is X?\n<|assistant|>"
    assert render_prompts(tok, ["a", "b"], "chat") == ["<|user|>a\n<|assistant|>", "<|user|>b\n<|assistant|>"]
    assert render_prompt(_BosTokenizer(), "Q", "chat") == "<user>Q<assistant>"  # the tokenizer adds the BOS the template wrote
    with pytest.raises(AmnesiaError, match="prompt_format 'html': expected one of raw, chat"):
        render_prompts(tok, ["a"], "html")


def test_one_format_from_unlearning_to_scoring(chat_target, fixture_world, tmp_path):
    config = UnlearnConfig(layers="0-1", kind="mlp", max_steps=1, batch_size=8, grad_accum=1, lr=1e-4, logging_steps=50, seed=0, prompt_format="chat")
    manifest = run_unlearning(chat_target, fixture_world, tmp_path / "u", config, model_options=CPU, progress=False)
    assert manifest["prompt_format"] == "chat" and manifest["hyperparameters"]["prompt_format"] == "chat"
    assert trained_format(tmp_path / "u") == ("chat", str(tmp_path / "u" / "unlearn.json"))
    model, tok = load_model(tmp_path / "u", CPU)
    data = load_semeval(fixture_world)
    raw = run_evaluation(model, tok, data, EvalConfig(splits="train", mmlu="off", limit=2, mia="off"), progress=False).scores
    assert raw["prompt_format"] == "raw" and raw["generation"]["prompt_format"] == "raw"
    assert raw["warnings"][0] == format_mismatch(tmp_path / "u", "raw")
    assert "says the model was trained with prompt_format chat, but it is scored with raw" in raw["warnings"][0]
    chat = run_evaluation(model, tok, data, EvalConfig(splits="train", mmlu="off", limit=2, mia="off", prompt_format="chat"), progress=False).scores
    assert not any("prompt_format" in w for w in chat["warnings"])
    assert format_mismatch(tmp_path / "nowhere", "raw") is None  # a folder that says nothing gives no warning


def test_run_config_sets_the_format_for_every_stage():
    base = {"world": {"people": 8}, "target": {"seed": 0}}
    config = config_from_mapping({**base, "prompt_format": "chat"})
    assert (config.unlearn.prompt_format, config.evaluate.prompt_format, config.target.prompt_format) == ("chat", "chat", "chat")
    assert config.trace.stage_config(config.prompt_format).facts.prompt_format == "chat"
    assert config_from_mapping(base).unlearn.prompt_format == "raw"  # default: the organizers' raw format
    for section in ("unlearn", "evaluate"):
        with pytest.raises(AmnesiaError, match=rf"{section}.prompt_format: set prompt_format at the top level"):
            config_from_mapping({**base, section: {"prompt_format": "chat"}})


def test_tracing_reads_the_chat_wrapped_prompt(chat_target, fixture_world, tmp_path):
    from pipelines.trace_stage import run_trace
    from tracing.config import TraceConfig

    model, tok = load_model(chat_target, CPU)
    stage = TraceStageConfig(trace=TraceConfig(kinds=("mlp",), samples=1, window=1), facts=FactSource(max_facts=1, prompt_format="chat"), heatmaps=0)
    outcome = run_trace(model, tok, load_semeval(fixture_world), tmp_path / "trace", stage, progress=False, check_prediction=False)
    fact = json.loads((tmp_path / "trace" / "trace.json").read_text())["facts"][0]
    assert fact["prompt"].startswith("<|user|>What is ") and fact["prompt"].endswith("?\n<|assistant|>")
    assert fact["subject"] in fact["prompt"] and outcome.selection.layers
    with pytest.raises(AmnesiaError, match="prompt_format 'xml'"):
        FactSource(prompt_format="xml").check()
