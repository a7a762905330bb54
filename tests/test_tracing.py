"""Causal tracing on the fixture target: facts, spans, the ROME filter, exactness, effects.

The batched tracer is held to ROME's plain loop (``tracing.reference``) with the same noise:
``max |ΔIE| <= 1e-5`` in fp32, with and without the prefix-cache suffix trick, with and without
entering the stack at the first restored layer, and with batches small enough to split. Tests run single-threaded (restored afterwards): on a 2-core machine
shared with other test runs, one BLAS thread is several times faster than two fighting.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from tracing import (
    AmnesiaError,
    Fact,
    FactSet,
    SelectionConfig,
    TraceConfig,
    aggregate,
    bridged,
    draw_noise,
    embedding_std,
    facts_from_records,
    facts_from_rows,
    layer_profile,
    load_layers,
    mean_ci,
    parse_noise,
    parse_question,
    plot_fact,
    prepare_facts,
    restored_layers,
    select_layers,
    spearman,
    subject_token_range,
    token_groups,
    trace_fact,
    trace_fact_reference,
    trace_facts,
    trace_prompt,
)
from tracing.bridge import suffix_cache_works
from tracing.stack import stack_entry_works
from tracing.tracer import FactTrace, fact_work
from unlearn.data import load_semeval
from unlearn.models import ModelOptions, load_model

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def target(fixture_target):
    return load_model(fixture_target, ModelOptions(device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def facts(fixture_world):
    found, skipped = facts_from_rows(load_semeval(fixture_world).get("forget", "train"))
    assert not skipped
    return found


@pytest.fixture(scope="module")
def kept(target, facts):
    model, tok = target
    return prepare_facts(model, tok, facts)


# --------------------------------------------------------------------------- facts (no model)


def test_parse_question_covers_both_task2_templates():
    assert parse_question("What is the birth date of Goldi Aqua?") == ("Goldi Aqua", "birth date")
    assert parse_question("What is the home address of Holly-anne Ivory?") == ("Holly-anne Ivory", "home address")
    assert parse_question("What is Goldi Aqua's Social Security Number?") == ("Goldi Aqua", "Social Security Number")
    assert parse_question("What is Goldi Aqua\u2019s email address?") == ("Goldi Aqua", "email address")
    assert parse_question("Which city hosted the 1900 Olympics?") is None


def test_facts_from_rows_takes_task2_qa_rows_naming_a_person():
    rows = [
        {"id": "p1sc1", "input": "Goldi Aqua was born", "output": " on ...", "task": "Task2", "split": "forget"},
        {"id": "p1qa0", "input": "What is the birth date of Goldi Aqua?", "output": "1976-03-29", "task": "Task2", "split": "forget"},
        ("p1qa2", "What is Goldi Aqua's phone number?", "5655779919", "Task2", "forget"),
        {"id": '"d7qa0"', "input": "What is the capital of Mars?", "output": "x", "task": "Task1", "split": "forget"},
        {"id": "p2qa1", "input": "Who wrote it?", "output": "nobody", "task": "Task2", "split": "forget"},
    ]
    facts, skipped = facts_from_rows(rows)
    assert [(f.prompt, f.subject, f.answer, f.relation) for f in facts] == [
        ("What is the birth date of Goldi Aqua?", "Goldi Aqua", "1976-03-29", "birth date"),
        ("What is Goldi Aqua's phone number?", "Goldi Aqua", "5655779919", "phone number"),
    ]
    assert [(s.fact.id, s.reason) for s in skipped] == [("p2qa1", "subject not found")]
    rephrased, _ = facts_from_rows(rows, rephrase=True)
    assert rephrased[0].prompt == "What is Goldi Aqua's birth date?"
    everything, _ = facts_from_rows(rows, tasks=None)
    assert len(everything) == 3  # the Task1 question names a subject ("Mars") too


def test_facts_from_rows_and_records_reject_bad_input():
    with pytest.raises(AmnesiaError, match=r"row 0 .*'output' must be a string"):
        facts_from_rows([{"id": "aqa0", "input": "What is X's y?", "output": None}])
    with pytest.raises(AmnesiaError, match=r"row 1: expected a mapping"):
        facts_from_rows([{"id": "aqa0", "input": "What is X's y?", "output": "z"}, 42])
    with pytest.raises(AmnesiaError, match=r"facts\[1\]: missing or empty field\(s\) subject"):
        facts_from_records([{"prompt": "a b", "subject": "a", "answer": "c"}, {"prompt": "x", "answer": "y"}])


def test_facts_from_records_accepts_rome_known_facts():
    rome = {"known_id": 0, "subject": "Vinson Massif", "attribute": "Antarctica", "prompt": "Vinson Massif is located in the continent of", "relation_id": "P30"}
    ours = {"prompt": "What is Goldi Aqua's phone number?", "subject": "Goldi Aqua", "answer": "5655779919", "id": "p1qa2"}
    a, b = facts_from_records([rome, ours])
    assert (a.answer, a.id, a.relation) == (" Antarctica", "0", "P30")  # ROME joins with a space
    assert (b.answer, b.id) == ("5655779919", "p1qa2")  # ours is appended verbatim


def test_parse_noise():
    assert (parse_noise("s3").value, parse_noise("s3").relative) == (3.0, True)
    assert (parse_noise("0.25").value, parse_noise(0.25).relative) == (0.25, False)
    assert parse_noise("s3").std(0.5) == 1.5
    for bad in ("x3", "-1", "s0", "nan", ""):
        with pytest.raises(AmnesiaError, match="noise"):
            parse_noise(bad)


def test_restored_layers_is_romes_window():
    def rome(layer, L, window):  # ROME's trace_important_window, verbatim
        return list(range(max(0, layer - window // 2), min(L, layer - (-window // 2))))

    for L, window in ((6, 10), (6, 3), (16, 10), (48, 10), (5, 1), (7, 4)):
        for layer in range(L):
            assert list(restored_layers("mlp", layer, L, window)) == rome(layer, L, window)
            assert list(restored_layers("hidden", layer, L, window)) == [layer]


# --------------------------------------------------------------------------- aggregation and selection (no model)


def test_token_groups_follow_rome():
    assert token_groups(9, (6, 8)) == {"first_subject": [6], "middle_subject": [], "last_subject": [7], "first_subsequent": [8], "further": [], "last": [8]}
    assert token_groups(10, (2, 6)) == {"first_subject": [2], "middle_subject": [3, 4], "last_subject": [5], "first_subsequent": [6], "further": [7, 8], "last": [9]}
    assert token_groups(4, (1, 4))["first_subsequent"] == []  # subject ends the prompt


def test_mean_ci_and_spearman():
    x = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    stats = mean_ci(x)
    half = 1.959963984540054 * 2.0 / np.sqrt(3)
    assert stats["n"] == 3 and stats["mean"] == [3.0, 2.0]
    assert stats["ci_low"][0] == pytest.approx(3.0 - half) and stats["ci_high"][1] == pytest.approx(2.0)
    assert mean_ci([0.5])["ci_low"] == 0.5
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505139)  # scipy.stats.spearmanr
    assert spearman([0.1, 0.5, 0.5, 0.2, 0.9], [1, 2, 3, 2, 5]) == pytest.approx(0.9210526315789475)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _summary(scores, kind="mlp", group="last_subject"):
    return {"n_facts": 5, "n_layers": len(scores), "aie": {kind: {group: {"mean": scores, "ci_low": scores, "ci_high": scores, "n": 5}}}}


def test_select_layers_window_and_threshold(tmp_path):
    scores = [0.0, 0.1, 0.5, 0.4, 0.05, 0.3, 0.0]
    window = functools.partial(SelectionConfig, evidence=False)  # the window alone (evidence: below)
    sel = select_layers(_summary(scores), window(k=2), model="m")
    assert sel.layers == [2, 3] and sel.method == "window" and sel.scores == scores and sel.n_layers == 7 and sel.n_facts == 5
    assert select_layers(_summary(scores), window(k=3)).layers == [1, 2, 3]
    assert select_layers(_summary(scores), window(k=99)).layers == list(range(7))  # clipped to the depth
    assert select_layers(_summary([0.2, 0.2, 0.2]), window(k=1)).layers == [0]  # first on ties
    assert select_layers(_summary(scores), window(mode="threshold", fraction=0.6)).layers == [2, 3, 5]
    with pytest.raises(AmnesiaError, match="positive AIE"):
        select_layers(_summary([-0.1, 0.0]), window(mode="threshold"))
    with pytest.raises(AmnesiaError, match="kind 'attn' was not traced"):
        select_layers(_summary(scores), window(kind="attn"))
    path = sel.save(tmp_path / "layers.json")
    # the default k scales with depth: 3/8 of the layers (the paper's 6 of OLMo-1B's 16)
    assert SelectionConfig().k_for(16) == 6 and SelectionConfig().k_for(6) == 2 and SelectionConfig().k_for(30) == 11 and SelectionConfig().k_for(2) == 1
    assert select_layers(_summary(scores), window()).layers == [1, 2, 3]  # round(0.375 * 7) = 3 layers
    # evidence: only the window's layers whose 95 % interval is above 0; none → the window, with a warning
    summary = _summary(scores)
    summary["aie"]["mlp"]["last_subject"]["ci_low"] = [-0.1, 0.05, 0.2, -0.01, 0.0, 0.1, -0.2]
    chosen = select_layers(summary, SelectionConfig(k=3))
    assert chosen.layers == [1, 2] and chosen.params["distinguishable"] == [1, 2] and "warning" not in chosen.params
    summary["aie"]["mlp"]["last_subject"]["ci_low"] = [-0.1] * 7
    fallback = select_layers(summary, SelectionConfig(k=2))
    assert fallback.layers == [2, 3] and "is distinguishable from zero" in fallback.params["warning"]
    back = load_layers(path)
    assert (back.kind, back.layers, back.model, back.params["k"]) == ("mlp", [2, 3], "m", 2)


def test_select_group_auto_reads_the_subject_group_with_evidence():
    """group auto: each subject group selects on its own; the one with the largest AIE among those with a layer
    distinguishable from 0 wins (the demos: the first subject token), and layers.json says which and why."""
    first = [0.30, 0.25, 0.02, 0.01, 0.0, 0.0]
    last = [0.00, 0.01, 0.03, 0.04, 0.02, 0.0]
    summary = {"n_facts": 8, "n_layers": 6, "aie": {"mlp": {
        "first_subject": {"mean": first, "ci_low": [v - 0.1 for v in first], "ci_high": [v + 0.1 for v in first], "n": 8},
        "last_subject": {"mean": last, "ci_low": [v - 0.05 for v in last], "ci_high": [v + 0.05 for v in last], "n": 8},
    }}}
    sel = select_layers(summary, SelectionConfig(k=2))
    assert sel.layers == [0, 1] and sel.params["group"] == "first_subject" and sel.params["group_requested"] == "auto"
    assert sel.params["groups"]["last_subject"]["distinguishable"] == [] and sel.params["groups"]["first_subject"]["distinguishable"] == [0, 1]
    assert sel.scores == first and "warning" not in sel.params
    # a pinned group is read as before, with its warning when it has no evidence
    pinned = select_layers(summary, SelectionConfig(k=2, group="last_subject"))
    assert pinned.layers == [2, 3] and pinned.params["group"] == "last_subject" and "last subject token is distinguishable" in pinned.params["warning"]
    # no group has evidence: the last subject token (ROME's), with the warning naming both groups
    for g in ("first_subject", "last_subject"):
        summary["aie"]["mlp"][g]["ci_low"] = [-1.0] * 6
    none = select_layers(summary, SelectionConfig(k=2))
    assert none.params["group"] == "last_subject" and "first subject or last subject tokens" in none.params["warning"]
    # a larger AIE without evidence does not beat a smaller one with it
    summary["aie"]["mlp"]["last_subject"]["ci_low"] = [v - 0.005 for v in last]
    assert select_layers(summary, SelectionConfig(k=2)).params["group"] == "last_subject"


# --------------------------------------------------------------------------- subject spans


def test_subject_span_from_offsets(target):
    _, tok = target
    prompt = "What is the birth date of Xanthe Yarrow?"
    s, e = subject_token_range(tok, prompt, "Xanthe Yarrow")
    ids = tok(prompt)["input_ids"]
    assert tok.decode(ids[s:e]) == " Xanthe Yarrow"  # the fixture tokenizer keeps the space in the offsets
    assert subject_token_range(tok, prompt, " Xanthe Yarrow") == (s, e)
    assert subject_token_range(tok, "Xanthe Yarrow's phone?", "Xanthe Yarrow")[0] == 0
    with pytest.raises(AmnesiaError, match="subject 'Goldi Aqua' does not occur in prompt"):
        subject_token_range(tok, prompt, "Goldi Aqua")


def test_subject_span_without_an_offset_mapping(target):
    """Slow (Python) tokenizers have no offset mapping: spans come from decoding prefixes."""
    _, fast = target

    class Slow:
        all_special_ids = fast.all_special_ids

        def __call__(self, text, return_offsets_mapping=False, **kw):
            if return_offsets_mapping:
                raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
            return fast(text, **kw)

        def decode(self, ids):
            return fast.decode(ids)

    for prompt in ("What is the birth date of Xanthe Yarrow?", "What is Xanthe Yarrow's phone number?"):
        assert subject_token_range(Slow(), prompt, "Xanthe Yarrow") == subject_token_range(fast, prompt, "Xanthe Yarrow")


def test_subject_span_with_the_olmo_tokenizer(olmo_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(olmo_tokenizer_dir))
    prompt = "What is Xanthe Yarrow's phone number?"
    s, e = subject_token_range(tok, prompt, "Xanthe Yarrow")
    ids = tok(prompt)["input_ids"]
    assert e - s >= 3  # BPE splits the rare name (the OLMo tokenizer trims spaces from offsets)
    assert tok.decode(ids[s:e]).strip() == "Xanthe Yarrow"
    assert tok.decode(ids[e]) == "'s"


# --------------------------------------------------------------------------- the filter


def test_prepare_facts_reports_skip_reasons(target, facts):
    model, tok = target
    good = facts[0]  # "What is the birth date of Xanthe Yarrow?" -> 1955-12-27
    wrong = Fact(good.prompt, good.subject, "2001-01-01")
    absent = Fact(good.prompt, "Goldi Aqua", good.answer)
    long = Fact(" ".join([good.prompt] * 4), good.subject, good.answer)
    result = prepare_facts(model, tok, [good, wrong, absent, long], max_tokens=20)
    assert [tf.fact for tf in result.kept] == [good]
    assert result.counts() == {"kept": 1, "subject not found": 1, "wrong prediction": 1, "too long": 1}
    assert {s.reason: s.fact for s in result.skipped}["wrong prediction"] == wrong
    tf = result.kept[0]
    assert tf.tokens[tf.subject_range[0]] == " Xanthe" and good.answer.startswith(tf.answer_token.strip()) and tf.answer_token


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("window", [10, 3])
def test_batched_equals_reference(target, kept, window):
    model, tok = target
    config = TraceConfig(samples=3, window=window)
    picks = [kept.kept[0], kept.kept[2]]  # subject at the end / at the start of the question
    with bridged(model, tok) as bridge:
        assert suffix_cache_works(bridge, model, torch.tensor(picks[0].input_ids))
        assert stack_entry_works(bridge, model, torch.tensor(picks[0].input_ids))
        for i, tf in enumerate(picks):
            s, e = tf.subject_range
            noise = draw_noise(0, i, config.samples, e - s, int(bridge.cfg.d_model), 0.15)
            ref = trace_fact_reference(bridge, tf, noise, config)
            runs = [
                trace_fact(bridge, model, tf, noise, config, suffix=True),
                trace_fact(bridge, model, tf, noise, config, suffix=False),
                trace_fact(bridge, model, tf, noise, config, suffix=True, batch_rows=7),  # 2 restorations per forward
                trace_fact(bridge, model, tf, noise, config, suffix=True, skip_layers=True),
                trace_fact(bridge, model, tf, noise, config, suffix=False, skip_layers=True),
                trace_fact(bridge, model, tf, noise, config, suffix=True, skip_layers=True, batch_rows=7),
            ]
            for run in runs:
                assert run.p_clean == pytest.approx(ref.p_clean, abs=1e-6)
                assert run.p_corrupt == pytest.approx(ref.p_corrupt, abs=1e-6)
                for kind in config.kinds:
                    assert run.ie[kind].shape == ref.ie[kind].shape == (len(tf.input_ids), 6)
                    assert np.abs(run.ie[kind] - ref.ie[kind]).max() <= 1e-5, kind
            assert np.abs(ref.ie["hidden"]).max() > 0.05  # not trivially equal


@pytest.fixture(scope="module")
def exact16(target, facts):
    model, tok = target
    return trace_facts(model, tok, facts[:16], TraceConfig(samples=5, window=3), progress=False)


def test_trace_shapes_and_romes_invariants(exact16):
    result = exact16
    assert result.suffix and result.skip_layers and len(result.traces) == 16 and result.n_layers == 6
    assert result.noise_std == pytest.approx(3 * result.embedding_std)
    for tr in result.traces:
        T, (s, e) = len(tr.tokens), tr.subject_range
        for kind in ("hidden", "mlp", "attn"):
            assert tr.ie[kind].shape == (T, 6)
            assert np.all(tr.ie[kind][:s] == 0)  # positions before the subject see no noise
        # The last block's output at the last token is what the logits read: restoring it restores p.
        assert tr.ie["hidden"][T - 1, 5] == pytest.approx(tr.te, abs=1e-5)
        # ... while the last block's output at earlier tokens reaches nothing.
        assert np.abs(tr.ie["hidden"][: T - 1, 5]).max() <= 1e-6


def test_trace_is_deterministic_for_a_seed(target, facts):
    model, tok = target
    config = TraceConfig(samples=3, kinds=("hidden", "mlp"), window=3)
    a, b = (trace_facts(model, tok, facts[:2], config, progress=False) for _ in range(2))
    c = trace_facts(model, tok, facts[:2], TraceConfig(samples=3, kinds=("hidden", "mlp"), window=3, seed=1), progress=False)
    for x, y, z in zip(a.traces, b.traces, c.traces):
        assert x.p_corrupt == y.p_corrupt and x.p_corrupt != z.p_corrupt
        for kind in ("hidden", "mlp"):
            assert np.array_equal(x.ie[kind], y.ie[kind])


def test_average_total_effect_over_kept_facts(target, kept, exact16):
    """TE > 0.3 on average over every kept fact (attribution runs compute the same p and p*)."""
    model, tok = target
    result = trace_facts(model, tok, kept, TraceConfig(method="attribution"), progress=False)
    assert len(result.traces) == len(kept.kept) == 70  # every forget-train fact of the fixture
    summary = aggregate(result.traces)
    assert summary["te"]["mean"] > 0.3, summary["te"]
    assert summary["te"]["ci_low"] > 0.2
    # p and p* do not depend on the method (same noise for the same seed, fact index and noise level).
    exact = trace_facts(model, tok, FactSet(kept.kept[:2]), TraceConfig(kinds=("hidden",)), progress=False, embedding_std_value=result.embedding_std)
    for a, b in zip(exact.traces, result.traces):
        assert a.p_clean == pytest.approx(b.p_clean, abs=1e-5) and a.p_corrupt == pytest.approx(b.p_corrupt, abs=1e-5)


def test_attribution_ranks_layers_like_exact_tracing(target, facts, exact16):
    """Spearman over layers where the fixture's effect is (first subject token, last token), attribution vs exact (docs/tracing.md reports it)."""
    model, tok = target
    approx = trace_facts(model, tok, facts[:16], TraceConfig(samples=5, window=3, method="attribution"), progress=False)
    exact, estimate = aggregate(exact16.traces), aggregate(approx.traces)
    for group in ("first_subject", "last"):
        rho = {k: spearman(layer_profile(exact, k, group), layer_profile(estimate, k, group)) for k in ("hidden", "mlp", "attn")}
        print(f"spearman at the {group} token:", rho)
        # 6 layers: one swapped pair of ranks costs 0.06–0.11; hidden at the last token measured 0.71 on an Intel Xeon, 0.94 on an AMD EPYC
        assert rho["hidden"] >= 0.7 and rho["mlp"] >= 0.8, (group, rho)
    # Cell by cell it is a first-order estimate: correlated (0.71 measured), not equal.
    x = np.concatenate([t.ie["hidden"].ravel() for t in exact16.traces])
    y = np.concatenate([t.ie["hidden"].ravel() for t in approx.traces])
    assert np.corrcoef(x, y)[0, 1] > 0.5


def test_auto_is_exact_where_selection_reads_and_reports_agreement(target, facts, exact16, tmp_path):
    """Method auto: the attribution screen everywhere, exact tracing at the confirm groups (the same
    numbers exact tracing gives there, so the same layers), and the screen's agreement with it."""
    model, tok = target
    config = TraceConfig(samples=5, window=3, method="auto", confirm=("last_subject", "last"))
    auto = trace_facts(model, tok, facts[:16], config, progress=False)
    assert auto.suffix and auto.skip_layers and [t.fact for t in auto.traces] == [t.fact for t in exact16.traces]
    for a, x in zip(auto.traces, exact16.traces):
        groups = token_groups(len(a.tokens), a.subject_range)
        rows = sorted({groups["last_subject"][0], groups["last"][0]})
        assert a.method == "auto" and a.exact_positions == rows and a.p_corrupt == pytest.approx(x.p_corrupt, abs=1e-6)
        for kind in config.kinds:
            assert np.abs(a.ie[kind][rows] - x.ie[kind][rows]).max() <= 1e-5, kind
            others = [t for t in range(a.subject_range[0], len(a.tokens)) if t not in rows]
            if others:  # elsewhere it is the estimate, not the exact value
                assert np.abs(a.ie[kind][others] - x.ie[kind][others]).max() > 1e-4, kind
            assert a.screen[kind].shape == (len(rows), 6)
        again = FactTrace.from_dict(json.loads(json.dumps(a.to_dict())))
        assert again.exact_positions == rows and all(np.array_equal(again.screen[k], a.screen[k]) for k in config.kinds)
    summary, exact = aggregate(auto.traces), aggregate(exact16.traces)
    select = SelectionConfig(k=2, group="last_subject")  # a group traced exactly here (TraceStageConfig confirms every group selection reads)
    assert select_layers(summary, select).layers == select_layers(exact, select).layers
    assert layer_profile(summary, "mlp", "last_subject") == pytest.approx(layer_profile(exact, "mlp", "last_subject"), abs=1e-5)
    agree = summary["agreement"]
    print("auto agreement:", agree)
    assert set(agree) == {"hidden", "mlp", "attn"} and agree["hidden"]["n"] + agree["hidden"]["undefined"] == 32
    assert agree["hidden"]["aie"] > 0.5 and -1 <= agree["mlp"]["per_fact"] <= 1
    assert "agreement" not in exact
    assert plot_fact(auto.traces[0], tmp_path / "auto.png").stat().st_size > 0


def test_work_accounting_matches_what_the_tracer_runs(target, kept):
    """The progress bar's units: what trace_fact reports as it goes adds up to fact_work, and
    entering mid-stack and the suffix trick each cut it."""
    model, tok = target
    config = TraceConfig(samples=2, window=3)
    tf = kept.kept[0]
    units = {}
    with bridged(model, tok) as bridge:
        noise = draw_noise(0, 0, 2, tf.subject_range[1] - tf.subject_range[0], int(bridge.cfg.d_model), 0.15)
        for suffix in (False, True):
            for skip in (False, True):
                done = []
                trace_fact(bridge, model, tf, noise, config, suffix=suffix, skip_layers=skip, batch_rows=8, advance=done.append)
                units[suffix, skip] = sum(done)
                assert units[suffix, skip] == fact_work(tf, 6, config, suffix=suffix, skip_layers=skip) and len(done) > 2
    assert units[True, True] < units[True, False] < units[False, False] and units[True, True] < units[False, True] < units[False, False]


def test_embedding_std_is_the_subject_embeddings_std(target, kept):
    model, tok = target
    facts = kept.kept[:5]
    with bridged(model, tok) as bridge:
        std = embedding_std(bridge, facts)
    emb = model.get_input_embeddings().weight.detach()
    manual = torch.cat([emb[list(tf.input_ids[tf.subject_range[0] : tf.subject_range[1]])] for tf in facts]).std().item()
    assert std == pytest.approx(manual, rel=1e-6)


# --------------------------------------------------------------------------- the model is left as it was


def test_model_is_restored_after_tracing(target):
    model, tok = target
    names = [n for n, _ in model.named_parameters()]
    keys = list(model.state_dict())
    attn = model.config._attn_implementation
    tensors = {(n, key): dict(getattr(m, key)) for n, m in model.named_modules() for key in ("_parameters", "_buffers")}
    ids = tok("What is Xanthe Yarrow's email address?", return_tensors="pt")["input_ids"]
    before = model.generate(ids, max_new_tokens=6, do_sample=False)
    with bridged(model, tok) as bridge:
        assert any("_original_component" in n for n, _ in model.named_parameters())  # the bridge wraps in place
        assert bridge.cfg.n_layers == 6
    assert [n for n, _ in model.named_parameters()] == names and list(model.state_dict()) == keys
    after = {(n, key): dict(getattr(m, key)) for n, m in model.named_modules() for key in ("_parameters", "_buffers")}
    assert after.keys() == tensors.keys()
    assert all(after[k].keys() == v.keys() and all(after[k][name] is t for name, t in v.items()) for k, v in tensors.items())  # the same objects
    assert model.config._attn_implementation == attn and model.config.architectures == ["OlmoForCausalLM"]
    assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False), before)
    assert tok.decode(before[0, ids.shape[1] :]).startswith("xanthe")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_bf16_model_is_traced_in_float32_and_cast_back_exactly(fixture_target, facts):
    model, tok = load_model(fixture_target, ModelOptions(device="cpu", dtype="bfloat16"))
    before = {n: t.clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    assert before["model.rotary_emb.inv_freq"].dtype == torch.float32  # buffers keep their own dtype
    result = trace_facts(model, tok, facts[2:3], TraceConfig(samples=2, kinds=("hidden",)), progress=False)
    assert result.traces[0].te > 0.5
    after = dict(list(model.named_parameters()) + list(model.named_buffers()))
    assert all(after[n].dtype == t.dtype and torch.equal(after[n], t) for n, t in before.items())
    # TransformerLens 4.3's OLMo attention cannot run in bfloat16: a one-line error, model untouched.
    with pytest.raises(AmnesiaError, match="cannot run architecture OlmoForCausalLM in bfloat16"):
        trace_facts(model, tok, facts[2:3], TraceConfig(samples=2, kinds=("hidden",), float32=False), progress=False)
    assert not any("_original_component" in n for n, _ in model.named_parameters())


# --------------------------------------------------------------------------- notebook use and errors


def test_trace_prompt_in_three_lines(target, tmp_path):
    model, tok = target
    trace = trace_prompt(model, tok, "What is Xanthe Yarrow's phone number?", subject="Xanthe Yarrow", config=TraceConfig(samples=3))
    png = plot_fact(trace, tmp_path / "fact.png")
    assert trace.answer_token == "9" and trace.ie["mlp"].shape == (8, 6) and trace.te > 0.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_clear_errors(target, facts):
    model, tok = target
    with pytest.raises(AmnesiaError, match="subject 'Goldi Aqua' does not occur in prompt"):
        trace_prompt(model, tok, "What is Xanthe Yarrow's phone number?", subject="Goldi Aqua")
    with pytest.raises(AmnesiaError, match="the model predicts '9', not the answer's first token '55'"):
        trace_prompt(model, tok, "What is Xanthe Yarrow's phone number?", subject="Xanthe Yarrow", answer="5555")
    with pytest.raises(AmnesiaError, match=r"no facts to trace: 0 candidate\(s\), none kept \(the fact set is empty\)"):
        trace_facts(model, tok, [], TraceConfig(), progress=False)
    with pytest.raises(AmnesiaError, match=r"none kept \(1 wrong prediction\)"):
        trace_facts(model, tok, [Fact(facts[0].prompt, facts[0].subject, "2001")], progress=False)
    with pytest.raises(AmnesiaError, match="kinds"):
        TraceConfig(kinds=("hidden", "mlps")).check()
    with pytest.raises(AmnesiaError, match="method"):
        TraceConfig(method="fast").check()
