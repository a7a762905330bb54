"""Tracing other decoders TransformerBridge supports, the real OLMo tokenizer, and clear refusals.

Tiny randomly initialised models (built here, nothing downloaded): the batched tracer must match
ROME's reference loop on each architecture, the prefix-cache check must hold where it is used,
and a model the bridge cannot hook must fail with one line naming the model and architecture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from tracing import AmnesiaError, TraceConfig, bridged, draw_noise, prepare_facts, tokenize_fact, trace_fact, trace_fact_reference, trace_facts, trace_prompt
from tracing.bridge import suffix_cache_works
from tracing.stack import stack_entry_works
from tracing.facts import Fact
from unlearn.models import load_tokenizer

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("one_torch_thread")]
PROMPT, SUBJECT = "What is the home address of Xanthe Yarrow?", "Xanthe Yarrow"


@pytest.fixture(scope="module")
def tok(fixture_target):
    return load_tokenizer(fixture_target)


def _tiny(config) -> torch.nn.Module:
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config).eval()


def _check_batched_equals_reference(model, tok, prompt=PROMPT, subject=SUBJECT):
    """Trace with the model's own prediction as the answer; batched (both paths) == reference."""
    probe = tokenize_fact(tok, Fact(prompt, subject, "?"))
    with torch.no_grad():
        predicted = int(model(torch.tensor([probe.input_ids])).logits[0, -1].argmax())
    fact = tokenize_fact(tok, Fact(prompt, subject, tok.decode([predicted])), answer_id=predicted)
    config = TraceConfig(samples=2, window=2)
    with bridged(model, tok) as bridge:
        suffix = suffix_cache_works(bridge, model, torch.tensor(fact.input_ids))
        skip = stack_entry_works(bridge, model, torch.tensor(fact.input_ids))
        s, e = fact.subject_range
        noise = draw_noise(0, 0, 2, e - s, int(bridge.cfg.d_model), 0.5)
        ref = trace_fact_reference(bridge, fact, noise, config)
        scale = max(float(np.abs(ref.ie[k]).max()) for k in config.kinds)
        for use_suffix in {False, suffix}:
            for use_skip in {False, skip}:
                run = trace_fact(bridge, model, fact, noise, config, suffix=use_suffix, skip_layers=use_skip)
                assert run.p_corrupt == pytest.approx(ref.p_corrupt, abs=1e-6)
                for kind in config.kinds:
                    diff = np.abs(run.ie[kind] - ref.ie[kind]).max()
                    # random weights give tiny probabilities: also hold the difference to the effects' own scale
                    assert diff <= 1e-5 and diff <= 1e-3 * scale, (kind, use_suffix, use_skip, diff, scale)
    assert scale > 0  # restoring does something
    return suffix and skip


ARCHITECTURES = {
    "gpt2": lambda v: tf.GPT2Config(vocab_size=v, n_embd=64, n_layer=3, n_head=4, n_positions=128),
    "llama": lambda v: tf.LlamaConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "gpt_neox": lambda v: tf.GPTNeoXConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4),
    "olmo2": lambda v: tf.Olmo2Config(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_other_decoders_trace_exactly(arch, tok):
    model = _tiny(ARCHITECTURES[arch](len(tok)))
    names = [n for n, _ in model.named_parameters()]
    assert _check_batched_equals_reference(model, tok), f"{arch}: the prefix cache and entering mid-stack should work"
    assert [n for n, _ in model.named_parameters()] == names and model.config.architectures is None


def test_subject_at_the_first_token(tok):
    """No prefix to reuse when the subject opens the prompt: the suffix run is the whole prompt."""
    model = _tiny(ARCHITECTURES["llama"](len(tok)))
    assert _check_batched_equals_reference(model, tok, "Xanthe Yarrow was born on", "Xanthe Yarrow")


def test_a_model_that_cannot_be_entered_mid_stack_runs_every_layer(tok, monkeypatch):
    """When the check finds entering mid-stack wrong (here: the cache's rows are mixed up), the
    tracer runs whole stacks and stays exact."""
    import tracing.stack as stack

    model = _tiny(ARCHITECTURES["llama"](len(tok)))
    fact = tokenize_fact(tok, Fact(PROMPT, SUBJECT, "?"))
    real = stack._layer_kv
    monkeypatch.setattr(stack, "_layer_kv", lambda cache, layer: tuple(x.flip(0) for x in real(cache, layer)))
    with bridged(model, tok) as bridge:
        assert not stack_entry_works(bridge, model, torch.tensor(fact.input_ids))
    with torch.no_grad():
        predicted = int(model(torch.tensor([fact.input_ids])).logits[0, -1].argmax())
    result = trace_facts(model, tok, [Fact(PROMPT, SUBJECT, tok.decode([predicted]))], TraceConfig(samples=2, window=2, kinds=("hidden",)), progress=False)
    assert result.suffix and not result.skip_layers and result.to_dict()["skip_layers"] is False


def test_tiny_olmo_on_the_real_tokenizer(olmo_tokenizer_dir):
    """The OLMo-0724 tokenizer trims spaces from offsets and splits names into many tokens."""
    tok = load_tokenizer(olmo_tokenizer_dir)
    config = tf.OlmoConfig(vocab_size=50304, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = _tiny(config)
    assert _check_batched_equals_reference(model, tok, "What is Xanthe Yarrow's phone number?")
    trace = trace_prompt(model, tok, "What is Xanthe Yarrow's phone number?", subject="Xanthe Yarrow", config=TraceConfig(samples=2, kinds=("hidden",)))
    s, e = trace.subject_range
    assert "".join(trace.tokens[s:e]).strip() == "Xanthe Yarrow" and e - s >= 3
    assert trace.ie["hidden"].shape == (len(trace.tokens), 2)
    kept = prepare_facts(model, tok, [Fact("What is Xanthe Yarrow's phone number?", "Xanthe Yarrow", trace.answer_token)])
    assert kept.counts()["kept"] == 1


def test_unsupported_models_fail_with_one_line(tok):
    xlnet = _tiny(tf.XLNetConfig(vocab_size=len(tok), d_model=64, n_layer=2, n_head=4, d_inner=128))
    with pytest.raises(AmnesiaError, match=r"TransformerBridge does not support architecture XLNetLMHeadModel") as info:
        with bridged(xlnet, tok):
            pass
    assert "\n" not in str(info.value)
    assert not any("_original_component" in n for n, _ in xlnet.named_parameters())
    bert = tf.BertForMaskedLM(tf.BertConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)).eval()
    with pytest.raises(AmnesiaError, match="architecture BertForMaskedLM is not a decoder-only causal language model"):
        trace_prompt(bert, tok, PROMPT, subject=SUBJECT, answer="1")
