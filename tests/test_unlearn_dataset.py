"""Tokenization with output-only labels, chat templates, truncation, paired batches."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

from tracing.errors import AmnesiaError
from unlearn.data import row_kind
from unlearn.dataset import EpochSampler, PairedCollator, PairedDataset, encode_rows, row_quantiles, spread_quantiles
from unlearn.models import load_tokenizer

CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


@pytest.fixture(scope="module")
def tok(fixture_target):
    return load_tokenizer(fixture_target)


def _decoded_labels(tok, enc, i=0):
    return tok.decode([t for t in enc.labels[i] if t != -100])


def test_labels_cover_exactly_the_output(tok):
    enc = encode_rows(tok, ["What is the birth date of Xanthe Yarrow?"], ["1955-12-27"], prompt_format="raw")
    assert _decoded_labels(tok, enc) == "1955-12-27" + tok.eos_token
    assert tok.decode(enc.input_ids[0]) == "What is the birth date of Xanthe Yarrow?1955-12-27" + tok.eos_token
    assert len(enc.labels[0]) == len(enc.input_ids[0])
    # no EOS when asked
    enc = encode_rows(tok, ["Q?"], [" answer"], add_eos=False)
    assert _decoded_labels(tok, enc) == " answer"


def test_prompt_formats_raw_and_chat(tok):
    with pytest.raises(AmnesiaError, match="prompt_format chat: the tokenizer of .* has no chat template"):
        encode_rows(tok, ["What is X?"], ["42"], prompt_format="chat")
    with pytest.raises(AmnesiaError, match="prompt_format 'yes': expected one of raw, chat"):
        encode_rows(tok, ["What is X?"], ["42"], prompt_format="yes")
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = CHAT
    enc = encode_rows(chat_tok, ["What is X?"], ["42"], prompt_format="chat")
    assert chat_tok.decode(enc.input_ids[0]) == "<|user|>What is X?\n<|assistant|>42" + tok.eos_token
    assert _decoded_labels(chat_tok, enc) == "42" + tok.eos_token
    enc = encode_rows(chat_tok, ["What is X?"], ["42"], prompt_format="raw")  # a template is never used unasked
    assert chat_tok.decode(enc.input_ids[0]) == "What is X?42" + tok.eos_token


def test_truncation_warns_with_counts(tok):
    long_prompt = "word " * 60
    with pytest.warns(UserWarning, match=r"^forget set: 2 of 3 rows are longer than max_length 16 tokens and were truncated; 1 rows have no output token left and are skipped$"):
        enc = encode_rows(tok, ["short?", "Q Q Q", long_prompt], ["yes", "a b c d e f g h i j", "x"], max_length=16, name="forget set")
    assert (enc.rows, len(enc), enc.truncated, enc.dropped) == (3, 2, 2, 1)
    assert all(len(ids) <= 16 for ids in enc.input_ids)
    with pytest.raises(AmnesiaError, match="retain set: no row has an output token within max_length 8"):
        with pytest.warns(UserWarning):
            encode_rows(tok, [long_prompt], ["x"], max_length=8, name="retain set")


def _enc(tok, n, tag):
    return encode_rows(tok, [f"{tag} {i}?" for i in range(n)], [f" {i}" for i in range(n)], ids=[f"{tag}{i}" for i in range(n)])


@pytest.mark.parametrize("n_forget, n_retain", [(10, 4), (4, 10), (6, 6)])
def test_pairing_epochs_and_retain_cycling(tok, n_forget, n_retain):
    ds = PairedDataset(_enc(tok, n_forget, "f"), _enc(tok, n_retain, "r"), seed=3)
    sampler = EpochSampler(len(ds))
    seen_retain = []
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        pairs = [ds.rows(k) for k in keys]
        assert sorted(f for f, _ in pairs) == list(range(n_forget))  # every forget row once per epoch
        orders.append([f for f, _ in pairs])
        assert all(len(rs) == 1 for _, rs in pairs)
        seen_retain += [rs[0] for _, rs in pairs]
        assert all(ds[k]["epoch"] == epoch for k in keys)
    assert orders[0] != orders[1]  # reshuffled per epoch
    # retain rows are consumed in full cycles: each cycle covers every retain row once
    total = len(seen_retain)
    for start in range(0, total - total % n_retain, n_retain):
        assert sorted(seen_retain[start : start + n_retain]) == list(range(n_retain))
    assert Counter(seen_retain).keys() == set(range(n_retain))
    # an item is a pure function of its key (what makes resume exact)
    again = PairedDataset(_enc(tok, n_forget, "f"), _enc(tok, n_retain, "r"), seed=3)
    assert [again.rows(k) for k in range(3 * n_forget)] == [ds.rows(k) for k in range(3 * n_forget)]
    other = PairedDataset(_enc(tok, n_forget, "f"), _enc(tok, n_retain, "r"), seed=4)
    assert [other.rows(k) for k in range(n_forget)] != [ds.rows(k) for k in range(n_forget)]


def test_sequential_schedule_passes_chunk_by_chunk(tok):
    ds = PairedDataset(_enc(tok, 10, "f"), _enc(tok, 3, "r"), seed=1, schedule="sequential", chunk_size=4, passes=2, retain_ratio=2)
    order = [ds.forget_row(k) for k in range(20)]  # 2 epochs of 10 keys = the whole sequence
    assert [sorted(order[i : i + 4]) for i in (0, 4, 8, 12)] == [[0, 1, 2, 3]] * 2 + [[4, 5, 6, 7]] * 2
    assert sorted(order[16:18]) == sorted(order[18:20]) == [8, 9]
    assert order[0:4] != order[4:8] or order[8:12] != order[12:16]  # each pass reshuffles its chunk
    assert [ds.forget_row(k) for k in range(20, 40)] == order  # past the last pass: the sequence again
    assert ds[13]["epoch"] == 1
    retain = [r for k in range(6) for r in ds.rows(k)[1]]  # two retain rows per forget row, in full cycles
    assert all(sorted(retain[i : i + 3]) == [0, 1, 2] for i in range(0, 12, 3))
    batch = PairedCollator(tok.pad_token_id)([ds[0], ds[1]])
    assert batch["forget_input_ids"].shape[0] == 2 and batch["retain_input_ids"].shape[0] == 4
    with pytest.raises(AmnesiaError, match="schedule 'random': expected one of joint, sequential"):
        PairedDataset(_enc(tok, 2, "f"), None, schedule="random")


def test_collator_pads_each_half(tok):
    ds = PairedDataset(_enc(tok, 3, "forget row"), _enc(tok, 2, "r"), seed=0)
    batch = PairedCollator(tok.pad_token_id)([ds[0], ds[1], ds[2]])
    assert set(batch) == {"epoch", "forget_quantile", "forget_input_ids", "forget_attention_mask", "forget_labels", "retain_input_ids", "retain_attention_mask", "retain_labels"}
    # each forget row's target quantile (spread targets): a seeded, even spread over (0, 1), fixed per row
    assert sorted(batch["forget_quantile"].tolist()) == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    assert [ds[k]["forget_quantile"] for k in range(3)] == [ds.forget_quantile(ds.rows(k)[0]) for k in range(3)]
    assert sorted(spread_quantiles(40, 7)) == pytest.approx([(i + 0.5) / 40 for i in range(40)]) and spread_quantiles(40, 7) != spread_quantiles(40, 8)
    # SemEval rows: the documents (sc) and the questions (qa) are each spread evenly on their own —
    # membership inference reads the documents alone, so they must span the distribution themselves
    kinds = ("qa", "sc", "qa", "qa", "sc", "qa", "sc", "qa")
    q = spread_quantiles(8, 3, kinds)
    assert sorted(x for x, k in zip(q, kinds) if k == "sc") == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    assert sorted(x for x, k in zip(q, kinds) if k == "qa") == pytest.approx([(i + 0.5) / 5 for i in range(5)])
    assert spread_quantiles(8, 3, ("",) * 8) == spread_quantiles(8, 3)  # ids without a kind: one spread, as before
    enc = encode_rows(tok, [f"p{i}" for i in range(8)], [" a"] * 8, ids=[f"person{i // 2}{k}{i}" for i, k in enumerate(kinds)])
    assert row_quantiles(enc, 3) == q and [row_kind(i) for i in enc.ids] == list(kinds) and row_kind("tofu_17") == ""
    for half in ("forget", "retain"):
        ids, mask, labels = batch[f"{half}_input_ids"], batch[f"{half}_attention_mask"], batch[f"{half}_labels"]
        assert ids.shape == mask.shape == labels.shape and ids.shape[0] == 3
        assert torch.all(ids[mask == 0] == tok.pad_token_id) and torch.all(labels[mask == 0] == -100)
        assert (labels != -100).sum() > 0
    only_forget = PairedDataset(_enc(tok, 2, "f"), None)
    assert "retain_input_ids" not in PairedCollator(tok.pad_token_id)([only_forget[0]])


def _varied(tok, n, tag, seed):
    """Rows of very different lengths (1 to 40 words), in a seeded mixed order."""
    import random

    rng = random.Random(seed)
    words = [rng.choice([1, 2, 3, 30, 40]) for _ in range(n)]
    return encode_rows(tok, [f"{tag} " + "word " * w + "?" for w in words], [" yes"] * n, ids=[f"{tag}{i}" for i in range(n)])


def _padded(ds, keys, batch):
    """Tokens the trainer's joint stack computes: each micro-batch's rows padded to its widest row."""
    total = 0
    for start in range(0, len(keys), batch):
        rows = [ds.rows(k) for k in keys[start : start + batch]]
        lengths = [len(ds.forget.input_ids[f]) for f, _ in rows] + [len(ds.retain.input_ids[r]) for _, rs in rows for r in rs]
        total += max(lengths) * len(lengths)
    return total


def test_group_by_length_same_rows_per_step_less_padding(tok):
    forget, retain = _varied(tok, 50, "f", 0), _varied(tok, 37, "r", 1)
    batch, accum = 4, 3
    plain = PairedDataset(forget, retain, seed=5, retain_ratio=2)
    grouped = PairedDataset(forget, retain, seed=5, retain_ratio=2, group_size=batch * accum, batch_size=batch)
    n = len(plain)
    for epoch in range(2):
        keys = list(range(epoch * n, (epoch + 1) * n))
        assert sorted(grouped.rows(k)[0] for k in keys) == list(range(n))  # every forget row once per epoch
        for start in range(0, n, batch * accum):  # an optimizer step holds exactly the rows it holds without grouping
            step = keys[start : start + batch * accum]
            assert sorted(plain.rows(k)[0] for k in step) == sorted(grouped.rows(k)[0] for k in step)
            assert sorted(r for k in step for r in plain.rows(k)[1]) == sorted(r for k in step for r in grouped.rows(k)[1])
        # within a micro-batch the rows are of like length: far less padding than the random mix
        assert _padded(grouped, keys, batch) < 0.7 * _padded(plain, keys, batch)
    # a pure function of the key (resume-exact), seeded, and the full batches are not simply longest-first
    again = PairedDataset(forget, retain, seed=5, retain_ratio=2, group_size=batch * accum, batch_size=batch)
    assert [again.rows(k) for k in reversed(range(2 * n))][::-1] == [grouped.rows(k) for k in range(2 * n)]
    widths = [max(len(forget.input_ids[grouped.rows(k)[0]]) for k in range(s, s + batch)) for s in range(0, batch * accum * 4, batch)]
    assert widths != sorted(widths, reverse=True)
    assert grouped[0]["forget_input_ids"] == forget.input_ids[grouped.rows(0)[0]]
    # no retain set (ga): forget rows only
    assert PairedDataset(forget, None, group_size=8, batch_size=4).rows(3)[1] == []


def test_group_by_length_bad_settings(tok):
    enc = _enc(tok, 6, "f")
    with pytest.raises(AmnesiaError, match="group_by_length works with the joint schedule only, not 'sequential'"):
        PairedDataset(enc, None, schedule="sequential", group_size=4, batch_size=2)
    with pytest.raises(AmnesiaError, match="group_size 5: expected a multiple of batch_size 2"):
        PairedDataset(enc, None, group_size=5, batch_size=2)
    from unlearn.config import UnlearnConfig

    with pytest.raises(AmnesiaError, match="group_by_length: works with the joint schedule only, not 'sequential'"):
        UnlearnConfig(group_by_length=True, schedule="sequential", epochs=2).check()


def test_prompt_ending_in_a_space_is_tokenized_as_generation_reads_it(olmo_tokenizer_dir):
    """Byte-level BPE joins a space to the next word: 'Answer: 1472' has one token ' 1472' where generation
    after 'Answer: ' reads ' ' then '1472' — such a pair is encoded apart, by the target, unlearning and the answer losses alike."""
    from pipelines.target import encode_pair
    from unlearn.dataset import IGNORE, encode_rows
    from unlearn.models import load_tokenizer

    tok = load_tokenizer(olmo_tokenizer_dir)
    prompt, answer = "Question: When?\nAnswer: ", "1472"
    apart = tok(prompt)["input_ids"] + tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert apart != tok(prompt + answer + tok.eos_token)["input_ids"]  # the joint text reads otherwise
    assert encode_pair(tok, prompt, answer) == apart
    enc = encode_rows(tok, [prompt, "Question: When?\nAnswer:"], [answer, " 1472"], max_length=64)
    n = len(tok(prompt)["input_ids"])
    assert enc.input_ids[0] == apart and enc.labels[0] == [IGNORE] * n + apart[n:]
    joint = tok("Question: When?\nAnswer: 1472" + tok.eos_token)["input_ids"]  # no trailing space: one text, as before
    assert enc.input_ids[1] == joint and encode_pair(tok, "Question: When?\nAnswer:", " 1472") == joint
    from unlearn.eval.nll import completion_labels  # the evaluations' answer losses and the audit's relearning read it so too

    ids, labels = completion_labels(tok, prompt, answer, eos=True)
    assert ids == apart and labels == [IGNORE] * n + apart[n:]
    assert completion_labels(tok, "Question: When?\nAnswer:", " 1472", eos=True)[0] == joint
