"""MUSE end to end: the CPU-sized excerpts, the request folder, the facts, the config, and a reduced `amnesia run`.

The reduced run trains a 2-layer target on 4 forget and 4 retain excerpts plus 4 + 4 KnowMem
prompts of the shared MUSE-News rows, a retain model without the forget rows, traces, unlearns a
few steps and scores all three with MUSE's metrics; the full `configs/muse_demo.yaml` is measured
in docs/muse.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import shared_path
from pipelines.config import load_config
from pipelines.muse.data import load_muse
from pipelines.muse.mini import build_mini, first_words, last_words, middle_words, question_subject, word_chunks
from pipelines.muse.pipeline import MuseRunConfig, MuseSection, corpus_rows, forget_facts, mini_rows, muse_config_from_mapping, write_request
from tracing.errors import AmnesiaError
from unlearn.data import load_semeval


@pytest.fixture(scope="module")
def muse_dir():
    return shared_path("data", "muse_news")


@pytest.fixture(scope="module")
def mini(muse_dir):
    return build_mini(load_muse(muse_dir), forget_docs=8, prompt_words=10, continuation_words=20, qa=8, icl_examples=2)


def test_excerpts_keep_the_text_s_own_characters():
    text = "One two,  three\nfour five.\n\nsix seven"
    assert last_words(text, 3) == "five.\n\nsix seven" and last_words(text, 99) == text
    assert first_words(" a b  c d", 3) == " a b  c" and first_words("a b", 5) == "a b"
    assert middle_words(text, 3) == "three\nfour five." and middle_words("x y", 5) == "x y"
    assert word_chunks(text, 3) == ["One two,  three", "four five.\n\nsix", "seven"] and word_chunks("", 3) == []


def test_question_subject_is_the_named_entity_not_in_the_examples():
    assert question_subject("What year did the Orkney Islands become part of Scotland?") == "Orkney Islands"
    assert question_subject("When did Samuel Paty get killed?") == "Samuel Paty"
    assert question_subject("What year did the Orkney Islands join Scotland?", context="Question: Orkney Islands?") == "Scotland"
    assert question_subject("how much did it cost?") is None and question_subject("What is it?") is None


def test_mini_muse_rows_and_roles(mini, muse_dir):
    data = load_muse(muse_dir)
    assert len(mini.verbmem) == 8 and len(mini.knowmem_forget) == len(mini.knowmem_retain) == 8 and len(mini.forget_icl) == 2
    for row, full in zip(mini.verbmem, data.verbmem):
        assert full["prompt"].endswith(row["prompt"]) and full["gt"].startswith(row["gt"])
        assert len(row["prompt"].split()) == 10 and len(row["gt"].split()) == 20
    for docs, source in ((mini.retain_docs, data.privleak_retain), (mini.holdout_docs, data.privleak_holdout)):
        assert len(docs) == 8 and all(d in a and len(d.split()) == 30 for d, a in zip(docs, source))
    # the calibration reference: raw forget articles holding no selected passage — never trained on, not the test holdout
    assert len(mini.reference_docs) == 8 and not set(mini.reference_docs) & set(mini.holdout_docs)
    assert all(not any(r["gt"][:60] in ref for r in mini.verbmem) for ref in mini.reference_docs)
    prompt = mini.forget_qa_prompts()[0]
    assert prompt.startswith("Question: " + data.knowmem_forget_icl[0]["question"]) and prompt.endswith(f"Question: {data.knowmem_forget[0]['question']}\nAnswer: ")


def test_mini_muse_refuses_too_few_rows(muse_dir):
    with pytest.raises(AmnesiaError, match=r"verbmem/forget.json has 100 rows; muse.forget_docs / muse.qa ask for 101"):
        build_mini(load_muse(muse_dir), forget_docs=101, prompt_words=4, continuation_words=4, qa=4, icl_examples=1)


def test_request_folder_is_an_unlearning_request(mini, tmp_path):
    section = MuseSection(forget_docs=8, prompt_words=10, continuation_words=20, qa=8)
    manifest = write_request(mini_rows(mini, section), tmp_path / "request", section, "x")
    data = load_semeval(tmp_path / "request")
    assert manifest["rows"] == {"forget_train": 12, "forget_validation": 4, "retain_train": 12, "retain_validation": 4}
    forget = list(data.get("forget", "train")) + list(data.get("forget", "validation"))
    docs = [r for r in forget if r["id"].endswith("sc0")]
    assert sorted(r["input"] + r["output"] for r in docs) == sorted(mini.forget_docs)
    qa = [r for r in forget if r["id"].endswith("qa0")]
    assert sorted(r["output"] for r in qa) == sorted(r["answer"] for r in mini.knowmem_forget)
    retain = list(data.get("retain", "train")) + list(data.get("retain", "validation"))
    assert sorted(r["input"] + r["output"] for r in retain if r["id"].endswith("sc0")) == sorted(mini.retain_docs)
    assert list(data.mia_validation["member"]["document"]) == mini.forget_docs
    assert list(data.mia_validation["nonmember"]["document"]) == mini.reference_docs
    scored = load_muse(tmp_path / "request" / "muse")  # what the evaluation reads: MUSE's layout
    assert scored.verbmem == mini.verbmem and scored.privleak_forget == mini.forget_docs and scored.privleak_holdout == mini.holdout_docs


def test_forget_facts_trace_the_question_s_entity(mini):
    facts = forget_facts(mini.knowmem_forget, mini.forget_icl)
    assert len(facts) >= 6
    for fact in facts:
        assert fact.prompt.endswith("\nAnswer: ") and fact.prompt.find(fact.subject) > fact.prompt.rfind("\n\nQuestion: ")


def _mapping(muse_dir, out, **extra):
    return {
        "name": "muse_small", "benchmark": "muse", "data": str(muse_dir), "out": str(out),
        "muse": {"forget_docs": 4, "prompt_words": 8, "continuation_words": 12, "qa": 4, "icl_examples": 1},
        "target": {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128, "vocab_size": 512, "max_length": 160, "steps": 120, "eval_every": 40,
                   "target_em": 0.5, "seed": 0},
        "loading": {"device": "cpu"},
        "trace": {"kinds": ["mlp"], "samples": 1, "window": 1, "max_facts": 2, "heatmaps": 1, "select_k": 1, "select_evidence": False},
        "unlearn": {"lr": 1e-3, "max_steps": 4, "batch_size": 4, "grad_accum": 1, "max_length": 160, "seed": 0, "eval_steps": 2, "eval_rows": 4},
        "evaluate": {"verbmem_max_new_tokens": 16, "knowmem_max_new_tokens": 8},
        **extra,
    }


def test_config_reads_muse_and_refuses_what_is_not_built(muse_dir, tmp_path):
    path = tmp_path / "muse.yaml"
    path.write_text(json.dumps(_mapping(muse_dir, tmp_path / "run")))
    config = load_config(path, ["muse.qa=8"])
    assert isinstance(config, MuseRunConfig) and config.muse.qa == 8
    assert config.unlearn.validation_mia == "min_k" and config.unlearn.validation_mia_tokens == "document"  # PrivLeak's attack, whole documents
    with pytest.raises(AmnesiaError, match="muse.mini \\(the CPU-sized run\\) trains its tiny target and retain model: give 'target'"):
        muse_config_from_mapping({**{k: v for k, v in _mapping(muse_dir, tmp_path).items() if k != "target"}, "model": "x"})
    with pytest.raises(AmnesiaError, match="muse.mini false \\(MUSE's own rows\\): give 'model'"):
        muse_config_from_mapping({**_mapping(muse_dir, tmp_path), "muse": {"mini": False}})
    own = muse_config_from_mapping({**{k: v for k, v in _mapping(muse_dir, tmp_path).items() if k != "target"}, "model": "m", "retain_model": "r", "muse": {"mini": False}})
    assert not own.muse.mini and own.retain_model == "r"
    with pytest.raises(AmnesiaError, match="prompt_format 'chat': benchmark muse scores raw text"):
        muse_config_from_mapping({**_mapping(muse_dir, tmp_path), "prompt_format": "chat"})
    with pytest.raises(AmnesiaError, match=r"muse.validation_every 1: expected an integer >= 2"):
        muse_config_from_mapping({**_mapping(muse_dir, tmp_path), "muse": {"validation_every": 1}})
    with pytest.raises(AmnesiaError, match=r"muse: unknown key 'qaa' \(did you mean 'qa'\?\)"):
        muse_config_from_mapping({**_mapping(muse_dir, tmp_path), "muse": {"qaa": 4}})


def test_demo_config_is_valid():
    config = load_config("configs/muse_demo.yaml")
    assert isinstance(config, MuseRunConfig) and config.muse.forget_docs == 24 and config.target is not None and config.unlearn.lr == "auto"


@pytest.fixture(scope="module")
def muse_run(muse_dir, tmp_path_factory):
    from pipelines.run import run_pipeline

    out = tmp_path_factory.mktemp("muse") / "run"
    path = out.parent / "muse.yaml"
    path.write_text(json.dumps(_mapping(muse_dir, out)))
    return run_pipeline(load_config(path), progress=False, log=lambda m: None)


def test_muse_run_end_to_end(muse_run):
    run_dir = muse_run.run_dir
    for name in ("request/muse/verbmem/forget.json", "target", "retain_model", "trace", "unlearned", "retrace", "scores_target", "scores_unlearned",
                 "scores_retain", "report.md", "report.html", "summary.json", "figures/muse.png"):
        assert (run_dir / name).exists(), name
    target = json.loads((run_dir / "target" / "target.json").read_text())
    retain = json.loads((run_dir / "retain_model" / "target.json").read_text())
    assert target["train_rows"] == 16 and retain["train_on"] == "retain" and retain["train_rows"] == 8
    unlearn = json.loads((run_dir / "unlearned" / "unlearn.json").read_text())
    assert unlearn["forget_target"]["source"].endswith("mia_data/validation/nonmember.jsonl") and unlearn["forget_target"]["documents"] == 4
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = {r["model"]: r for r in summary["muse"]["rows"]}
    assert list(rows) == ["target", "unlearned (sha256)", "retain model"]
    assert rows["retain model"]["privleak"] == pytest.approx(0.0, abs=1e-9) and rows["target"]["utility_kept"] == pytest.approx(1.0)
    for r in rows.values():
        for key in ("verbmem_f", "knowmem_f", "knowmem_r"):
            assert 0 <= r[key] <= 100
        assert 0 <= r["privleak_auc"] <= 1
    scores = json.loads((run_dir / "scores_target" / "scores.json").read_text())
    assert scores["kind"] == "muse_scores" and scores["verbmem_f.rows"] == 4 and scores["knowmem_f.rows"] == 4 and scores["privleak.forget_rows"] == 4
    md = (run_dir / "report.md").read_text()
    for heading in ("## MUSE", "## Notes", "## Facts", "## Unlearning", "## Wall time"):
        assert heading in md, heading
    assert "its PrivLeak against itself is 0.0" in md and "MUSE's criteria" in md


def _own_folder(mini, muse_run, tmp_path):
    """MUSE's layout with raw/retain1.json and raw/holdout.json (the Hub dataset has them; ../shared does not),
    built from the reduced run's excerpts so its tiny target and retain model can be the given ones."""
    import shutil

    folder = Path(shutil.copytree(muse_run.run_dir / "request" / "muse", tmp_path / "muse_own"))
    run_mini = load_muse(folder)
    (folder / "raw" / "retain1.json").write_text(json.dumps(run_mini.privleak_retain))
    (folder / "raw" / "holdout.json").write_text(json.dumps(run_mini.privleak_holdout + mini.reference_docs[:3]))
    return folder


def test_own_rows_are_the_corpora_in_chunks(mini, muse_run, tmp_path):
    folder = _own_folder(mini, muse_run, tmp_path)
    data = load_muse(folder)
    rows = corpus_rows(data, MuseSection(mini=False, prompt_words=4, chunk_words=10))
    assert [p + o for p, o in rows.documents["forget"]] == [c for t in data.raw_forget for c in word_chunks(t, 10) if len(c.split()) > 4]
    assert all(len(p.split()) == 4 for p, _ in rows.documents["forget"] + rows.documents["retain"]) and rows.questions["forget"] == []
    # the reference: raw/holdout without PrivLeak's holdout articles (the test)
    assert "".join(rows.reference) == "".join(c for t in mini.reference_docs[:3] for c in word_chunks(t, 10) if len(c.split()) > 4)
    assert rows.facts_from == (data.knowmem_forget, data.knowmem_forget_icl)
    (folder / "raw" / "holdout.json").write_text(json.dumps(data.privleak_holdout))
    with pytest.raises(AmnesiaError, match="raw/holdout.json: every article is one of privleak/holdout.json's"):
        corpus_rows(load_muse(folder), MuseSection(mini=False))
    (folder / "raw" / "retain1.json").unlink()
    with pytest.raises(AmnesiaError, match=r"no raw/retain1.json \(or raw/retain.json\)"):
        corpus_rows(load_muse(folder), MuseSection(mini=False))


def test_a_run_on_muse_s_own_rows_with_given_models(mini, muse_run, tmp_path):
    from pipelines.run import run_pipeline

    folder = _own_folder(mini, muse_run, tmp_path)
    mapping = {k: v for k, v in _mapping(folder, tmp_path / "own", name="muse_own").items() if k != "target"}
    mapping.update({"model": str(muse_run.run_dir / "target"), "retain_model": str(muse_run.run_dir / "retain_model"),
                    "muse": {"mini": False, "prompt_words": 4, "chunk_words": 12, "validation_every": 2}})
    path = tmp_path / "own.yaml"
    path.write_text(json.dumps(mapping))
    done = run_pipeline(load_config(path), progress=False, log=lambda m: None)
    run_dir = done.run_dir
    assert not (run_dir / "target").exists() and not (run_dir / "retain_model").exists() and not (run_dir / "request" / "muse").exists()
    request = json.loads((run_dir / "request" / "request.json").read_text())
    assert request["documents"]["reference"] >= 3 and request["questions"] == {"forget": 0, "retain": 0, "icl_examples": 1}
    # scored on the given folder as it is: the same rows, so the given models score as in the reduced run
    for label in ("target", "retain"):
        own = json.loads((run_dir / f"scores_{label}" / "scores.json").read_text())
        mini_scores = json.loads((muse_run.run_dir / f"scores_{label}" / "scores.json").read_text())
        assert own["data"] == str(folder)
        for key in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak_auc"):
            assert own[key] == pytest.approx(mini_scores[key]), key
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == str(muse_run.run_dir / "target") and [r["model"] for r in summary["muse"]["rows"]] == ["target", "unlearned (sha256)", "retain model"]
    assert "MUSE's own:" in (run_dir / "report.md").read_text()


def test_muse_audit_stage(muse_run, muse_dir, tmp_path):
    """`audit.enabled` on a copy of the reduced run: MUSE's forget metrics under attack, the held-out
    half of the VerbMem and KnowMem rows, the report's section."""
    import shutil

    from pipelines.run import run_pipeline

    run_dir = tmp_path / "run"
    shutil.copytree(muse_run.run_dir, run_dir)
    path = tmp_path / "muse.yaml"
    path.write_text(json.dumps(_mapping(muse_dir, run_dir, audit={"enabled": True, "attacks": ["int8", "relearn_forget", "relearn_related", "paraphrase"],
                                                                    "relearn_steps": 2, "references": False})))
    done = run_pipeline(load_config(path), progress=False, log=lambda m: None)
    computed = {n for n, r in done.stages.items() if not r.skipped}
    assert computed == {"audit"}
    audit = json.loads((run_dir / "summary.json").read_text())["audit"]
    assert audit["worst_case_metrics"] == ["VerbMem forget", "KnowMem forget"] and audit["floor_model"] is None  # references off: the floor is not attacked
    scores = audit["scores"]
    assert set(scores) == {"unlearned", "target", "retain"}
    assert all(v is None for v in scores["unlearned"]["paraphrase"].values())  # MUSE has no paraphrases: not measured
    assert scores["unlearned"]["none/held_out"]["PrivLeak AUC"] is None and 0 <= scores["unlearned"]["none/all"]["PrivLeak AUC"] <= 1
    assert 0 <= scores["unlearned"]["relearn_forget"]["VerbMem forget"] <= 100
    assert audit["rows"]["relearned_verbmem"] == 2 and audit["rows"]["relearned_knowmem"] == 2 and audit["rows"]["related_pool"] == 4
    md = (run_dir / "report.md").read_text()
    assert "## Audit: forgotten or only hidden?" in md and "worst-case recovery |" in md


def test_c5_c6_steps_of_the_reduced_run(muse_run, muse_dir, tmp_path):
    """C5 and C6 on the reduced run (3 forget training documents and questions, 3 folds): only the
    steps are computed; C5's last step is the run's own unlearning, C6's first is C5's first,
    C6's later steps start from the step before; the report and summary show both."""
    import shutil

    from pipelines.run import run_pipeline

    base = tmp_path / "run"
    shutil.copytree(muse_run.run_dir, base)
    path = tmp_path / "muse.yaml"
    muse = {"forget_docs": 4, "prompt_words": 8, "continuation_words": 12, "qa": 4, "icl_examples": 1, "folds": 3, "scalability": True, "sustainability": True}
    path.write_text(json.dumps({**_mapping(muse_dir, base), "muse": muse}))
    done = run_pipeline(load_config(path), progress=False, log=lambda m: None)
    computed = {n for n, r in done.stages.items() if not r.skipped}
    assert computed == {"scal_1_request", "scal_1", "scal_1_scores", "scal_2_request", "scal_2", "scal_2_scores",
                        "sust_2_request", "sust_2", "sust_2_scores", "sust_3_request", "sust_3", "sust_3_scores"}
    steps = json.loads((base / "summary.json").read_text())["muse"]["steps"]
    assert [(r["stage"], r["from"], r["documents"], r["questions"], r["requested"]) for r in steps["scal"]] == [
        ("scal_1", "target", 1, 1, 2), ("scal_2", "target", 2, 2, 4), ("unlearned", "target", 3, 3, 6)]
    assert [(r["stage"], r["from"], r["documents"], r["requested"]) for r in steps["sust"]] == [
        ("scal_1", "target", 1, 2), ("sust_2", "scal_1", 1, 4), ("sust_3", "sust_2", 1, 6)]
    unlearn = json.loads((base / "sust_2" / "unlearn.json").read_text())
    assert unlearn["source_model"] == str(base / "scal_1") and unlearn["data"] == str(base / "sust_2_request")
    request = load_semeval(base / "sust_3_request")
    assert [r["id"] for r in request.get("forget", "train")] == ["muse-forget-doc002sc0", "muse-forget-q002qa0"]
    scores = json.loads((base / "scal_2_scores" / "scores.json").read_text())
    assert steps["scal"][1]["verbmem_f"] == pytest.approx(scores["verbmem_f"]) and 0 <= steps["scal"][1]["verbmem_requested"] <= 100
    assert steps["scal"][-1]["verbmem_not_requested"] is None and steps["scal"][0]["verbmem_not_requested"] is not None
    md = (base / "report.md").read_text()
    assert "## C5 scalability and C6 sustainability" in md and "**C6 sustainability**" in md and (base / "figures" / "muse_steps.png").exists()


def test_muse_s_checkpoint_rule_measures_the_retain_model_s_floor(muse_run, muse_dir, tmp_path):
    """unlearn.select_by forgotten (MUSE's rule) on a copy of the reduced run: the retain model's
    validation forget knowledge (select_floor/) is the floor the unlearning's selection reads."""
    import shutil

    from pipelines.run import run_pipeline

    run_dir = tmp_path / "run"
    shutil.copytree(muse_run.run_dir, run_dir)
    mapping = _mapping(muse_dir, run_dir)
    mapping["unlearn"] = {**mapping["unlearn"], "select_by": "forgotten"}
    path = tmp_path / "muse.yaml"
    path.write_text(json.dumps(mapping))
    done = run_pipeline(load_config(path), progress=False, log=lambda m: None)
    computed = {n for n, r in done.stages.items() if not r.skipped}
    assert computed == {"select_floor", "unlearned", "retrace", "scores_unlearned"}
    floor = json.loads((run_dir / "select_floor" / "validation.json").read_text())
    assert floor["model"] == str(run_dir / "retain_model") and 0 <= floor["forget_knowledge"] <= 1
    validation = json.loads((run_dir / "unlearned" / "unlearn.json").read_text())["validation"]
    assert validation["select_by"] == "forgotten" and validation["floor"] == floor["forget_knowledge"]
    reached = [h["step"] for h in validation["history"] if h["step"] > 0 and h["forget_knowledge"] <= floor["forget_knowledge"]]
    assert validation["reached_step"] == (reached[0] if reached else None)
    assert validation["best_step"] == (reached[0] if reached else min((h for h in validation["history"] if h["step"] > 0), key=lambda h: h["forget_knowledge"])["step"])

