"""Batched generation, scores and NLL are identical to a plain one-row-at-a-time reference (fp32)."""

from __future__ import annotations

import pytest
import torch

from unlearn.batching import ROW_EXACT, SMALL_ROWS, row_exact_attention, small_rows
from unlearn.data import load_semeval
from unlearn.eval.metrics import score_row
from unlearn.eval.nll import NLLOptions, completion_nll, document_nll
from unlearn.generation import GenerationOptions, clean_up_spaces, generate, greedy_generate
from unlearn.models import ModelOptions, load_model


@pytest.fixture(scope="module")
def model_tok(fixture_target):
    model, tok = load_model(fixture_target, ModelOptions(device="cpu", dtype="float32"))
    return model, tok


@pytest.fixture(scope="module")
def rows(fixture_world):
    """Validation rows (never trained on: free-running text) and train rows (memorized), both row types."""
    data = load_semeval(fixture_world)
    out = []
    for kind in ("forget", "retain"):
        out += list(data.get(kind, "validation"))[::3]
        out += list(data.get(kind, "train"))[::7]
    # a question whose expected answer the model cannot give: a knowledge-0 row whatever the fixture memorised
    wrong = next(r for r in out if r["id"].rstrip().endswith("qa0"))
    return out + [{**wrong, "id": wrong["id"].replace("qa0", "qa9"), "output": "no such answer"}]


@torch.no_grad()
def reference_row(model, tok, row: dict, max_new_tokens: int = 256) -> dict:
    """The organizers' recipe for one row: tokenize, generate, decode, score; NLL of input + output."""
    ids = tok(row["input"], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=tok.eos_token_id)
    text = clean_up_spaces(tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)[0])
    full = tok(row["input"] + row["output"], return_tensors="pt").input_ids
    labels = full.clone()
    labels[:, : ids.shape[1]] = -100
    nll = model(full, labels=labels).loss.item()
    return {"text": text, "nll": nll, "score": score_row(row["id"], row["output"], text)}


@pytest.fixture(scope="module")
def references(model_tok, rows):
    model, tok = model_tok
    return [reference_row(model, tok, r) for r in rows]


@pytest.mark.parametrize("batch_size", [None, 5])
def test_batched_equals_reference(model_tok, rows, references, batch_size):
    model, tok = model_tok
    prompts = [r["input"] for r in rows]
    gen = generate(model, tok, prompts, GenerationOptions(batch_size=batch_size, clean_up_spaces=True, tie_margin=1e-3))
    nll = completion_nll(model, tok, prompts, [r["output"] for r in rows], NLLOptions(batch_size=batch_size))
    assert len(gen.batch_sizes) > 1 and max(gen.batch_sizes) > 1  # real batches with padding
    for row, ref, text, loss in zip(rows, references, gen.texts, nll):
        assert text == ref["text"], row["id"]
        assert score_row(row["id"], row["output"], text) == ref["score"], row["id"]
        assert loss == ref["nll"], (row["id"], loss, ref["nll"])  # bit for bit, not approximately
    assert sum(g.strip() != "" for g in gen.texts) > len(rows) // 2
    assert any(ref["score"].knowledge == 1 for ref in references) and any(ref["score"].knowledge == 0 for ref in references)


def test_document_nll_equals_reference(model_tok, fixture_world):
    model, tok = model_tok
    mia = load_semeval(fixture_world).mia
    docs = list(mia["member"]["document"]) + list(mia["nonmember"]["document"])
    with torch.no_grad():
        expected = []
        for doc in docs:
            ids = tok(doc, return_tensors="pt").input_ids
            expected.append(model(ids, labels=ids.clone()).loss.item())
    assert document_nll(model, tok, docs, NLLOptions(batch_size=7)) == expected


def test_short_rows_and_empty_outputs(model_tok):
    model, tok = model_tok
    prompts = ["What is", "Who", "What is the birth date of Xanthe Yarrow? And where does she live and what is her phone number"]
    outputs = [" a", "", " 1955-12-27"]
    got = completion_nll(model, tok, prompts, outputs, NLLOptions(batch_size=3))
    with torch.no_grad():
        for p, o, loss in zip(prompts, outputs, got):
            full = tok(p + o, return_tensors="pt").input_ids
            labels = full.clone()
            labels[:, : len(tok(p)["input_ids"])] = -100
            expected = model(full, labels=labels).loss.item()
            assert (loss != loss and expected != expected) or loss == expected  # NaN where nothing is scored
    assert len(tok(prompts[0] + outputs[0])["input_ids"]) < SMALL_ROWS <= small_rows(model) <= 65
    assert got[1] != got[1]  # an empty output scores nothing: NaN, as model(..., labels).loss


def test_near_tie_reruns_give_reference_texts(model_tok, rows, references):
    model, tok = model_tok
    few = list(range(0, len(rows), max(1, len(rows) // 4)))[:4]
    gen = generate(model, tok, [rows[i]["input"] for i in few], GenerationOptions(batch_size=2, clean_up_spaces=True, tie_margin=1e9))
    assert gen.reruns == list(range(len(few)))  # a margin no gap can reach: every row regenerated alone
    assert gen.texts == [references[i]["text"] for i in few]
    assert gen.min_margin is not None and gen.min_margin > 0


def test_row_exact_attention_is_restored_and_greedy_generate_compatible(model_tok, rows):
    model, tok = model_tok
    before = model.config._attn_implementation
    with row_exact_attention(model) as active:
        assert active and model.config._attn_implementation == ROW_EXACT
    assert model.config._attn_implementation == before
    prompts = [r["input"] for r in rows[:6]]
    legacy = greedy_generate(model, tok, prompts, max_new_tokens=16, batch_size=3)
    assert legacy == generate(model, tok, prompts, GenerationOptions(max_new_tokens=16, batch_size=None)).texts
    assert not model.training


def test_generation_stops_at_the_context(fixture_target):
    """A prompt that leaves fewer than max_new_tokens positions in the model's context: its row
    stops at the last position (generated alone, listed as capped), the others are untouched."""
    model, tok = load_model(fixture_target, ModelOptions(device="cpu", dtype="float32"))
    ctx = model.config.max_position_embeddings
    short, long = "Alice Smith was born in", " ".join(["word"] * 400)
    ids = tok(long)["input_ids"][: ctx - 5]
    long = tok.decode(ids)
    n_long = len(tok(long)["input_ids"])
    assert ctx - 10 < n_long < ctx  # the long prompt leaves a few positions
    options = GenerationOptions(max_new_tokens=20, batch_size=2)
    full = tok.decode(tok(" ".join(["word"] * 400))["input_ids"][: ctx + 20])
    assert len(tok(full)["input_ids"]) >= ctx
    out = generate(model, tok, [short, long, full], options)
    assert out.capped == [1, 2] and out.new_tokens[1] <= ctx - n_long and out.texts[2] == "" and out.new_tokens[2] == 0
    alone = generate(model, tok, [long], GenerationOptions(max_new_tokens=ctx - n_long))
    assert out.texts[1] == alone.texts[0]
    assert out.texts[0] == generate(model, tok, [short], GenerationOptions(max_new_tokens=20)).texts[0]
