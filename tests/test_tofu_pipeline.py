"""TOFU end to end: the request folder, the facts, the config, and a reduced `amnesia run` on CPU.

The reduced run trains a 2-layer target on one retain author plus the forget01 authors, a retain
model without them, traces, unlearns a few steps and scores all three with TOFU's metrics; the
full `configs/tofu_demo.yaml` is measured in docs/tofu.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import shared_path
from pipelines.config import load_config
from pipelines.tofu.pipeline import TofuRunConfig, forget_facts, load_data, tofu_config_from_mapping, write_request
from tracing.errors import AmnesiaError
from unlearn.data import load_semeval
from pipelines.tofu.data import load_tofu, reference_holdout, subset


@pytest.fixture(scope="module")
def tofu_dir():
    return shared_path("data", "tofu")


@pytest.fixture(scope="module")
def small(tofu_dir):
    return subset(load_tofu(tofu_dir, "forget01"), [0, 1])


def test_request_folder_is_an_unlearning_request(small, tmp_path):
    manifest = write_request(small, tmp_path / "request", validation_every=4)
    data = load_semeval(tmp_path / "request")
    assert manifest["rows"] == {"forget_train": 30, "forget_validation": 10, "retain_train": 30, "retain_validation": 10}
    assert manifest["forget_authors"] == [198, 199] and manifest["retain_authors"] == [0, 1]
    forget = list(data.get("forget", "train")) + list(data.get("forget", "validation"))
    assert sorted(r["input"] for r in forget) == sorted(r["question"] + "\n" for r in small.forget)  # raw: question, newline
    assert {r["output"] for r in forget} == {r["answer"] for r in small.forget}
    assert all(r["id"].startswith(("tofu-198-", "tofu-199-")) and r["id"].endswith("qa0") for r in forget)
    validation = data.get("forget", "validation")["id"]
    assert sorted(int(i.split("-")[2][:2]) for i in validation) == [3, 3, 7, 7, 11, 11, 15, 15, 19, 19]
    # calibration and validation read never-seen authors that are not the test holdout
    members = list(data.mia_validation["member"]["document"])
    nonmembers = list(data.mia_validation["nonmember"]["document"])
    assert len(members) == 40 and len(nonmembers) == 160
    prompts = list(data.mia_validation["member"]["prompt"])  # validation scores the answer tokens after them, as privleak does
    assert sorted(prompts) == sorted(r["question"] + "\n" for r in small.forget) and all(d.startswith(p) for d, p in zip(members, prompts))
    test = {r["question"] + "\n" + r["answer"] for r in small.holdout}
    assert not test & set(nonmembers) and not test & set(members)
    assert manifest["reference"]["documents"] == 160 and manifest["reference"]["source"].endswith("holdout05.json")
    assert data.mia == {}  # no test MIA files: TOFU scores privleak on its holdout


def test_reference_holdout_per_split(tofu_dir):
    assert len(reference_holdout(load_tofu(tofu_dir, "forget05"))[0]) == 200
    assert reference_holdout(load_tofu(tofu_dir, "forget10")) is None


def test_forget_facts_name_their_author(small, olmo_tokenizer_dir):
    from unlearn.models import load_tokenizer

    tok = load_tokenizer(olmo_tokenizer_dir)
    facts = forget_facts(small, tok, "raw")
    assert {f.subject for f in facts} == {"Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"}
    assert len(facts) == 38  # 19 of each author's 20 questions name the author
    for fact in facts:
        assert fact.subject in fact.prompt and fact.prompt.endswith("?\n") and fact.id.endswith("qa0")


def _mapping(tofu_dir, out, **extra):
    return {
        "name": "tofu_small", "benchmark": "tofu", "data": str(tofu_dir), "out": str(out),
        "tofu": {"retain_authors": [0]},
        "target": {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128, "vocab_size": 512, "steps": 120, "eval_every": 40, "target_em": 0.5, "seed": 0},
        "loading": {"device": "cpu"},
        "trace": {"kinds": ["mlp"], "samples": 1, "window": 1, "max_facts": 2, "heatmaps": 1, "select_k": 1, "select_evidence": False},
        "unlearn": {"lr": 1e-3, "max_steps": 4, "batch_size": 8, "grad_accum": 1, "max_length": 160, "seed": 0, "eval_steps": 2, "eval_rows": 4},
        "evaluate": {"limit": 12, "max_new_tokens": 8, "batch_size": 8},
        **extra,
    }


def test_config_reads_tofu_and_checks_models(tofu_dir, tmp_path):
    path = tmp_path / "tofu.yaml"
    path.write_text(json.dumps(_mapping(tofu_dir, tmp_path / "run")))
    config = load_config(path, ["tofu.split=forget05", "unlearn.epochs=3"])
    assert isinstance(config, TofuRunConfig) and config.tofu.split == "forget05" and config.unlearn.epochs == 3
    assert config.evaluate.prompt_format == config.unlearn.prompt_format == config.target.prompt_format == "raw"
    with pytest.raises(AmnesiaError, match="'target' trains the retain model too"):
        tofu_config_from_mapping({**_mapping(tofu_dir, tmp_path), "retain_model": "x"})
    with pytest.raises(AmnesiaError, match="give exactly one of 'model'"):
        tofu_config_from_mapping({k: v for k, v in _mapping(tofu_dir, tmp_path).items() if k != "target"})
    with pytest.raises(AmnesiaError, match=r"tofu: unknown key 'splt' \(did you mean 'split'\?\)"):
        tofu_config_from_mapping({**_mapping(tofu_dir, tmp_path), "tofu": {"splt": "forget01"}})
    with pytest.raises(AmnesiaError, match="evaluate.prompt_format: set prompt_format at the top level"):
        tofu_config_from_mapping({**_mapping(tofu_dir, tmp_path), "evaluate": {"prompt_format": "chat"}})
    assert len(load_data(tofu_config_from_mapping(_mapping(tofu_dir, tmp_path))).retain) == 20
    with pytest.raises(AmnesiaError, match=r"benchmark 'tofuu': unknown \(did you mean tofu\?\); expected one of semeval, tofu"):
        load_config(path, ["benchmark=tofuu"])


def test_demo_config_is_valid():
    config = load_config("configs/tofu_demo.yaml")
    assert isinstance(config, TofuRunConfig) and config.tofu.split == "forget01" and config.target is not None


@pytest.fixture(scope="module")
def tofu_run(tofu_dir, tmp_path_factory):
    from pipelines.config import load_config as load
    from pipelines.run import run_pipeline

    out = tmp_path_factory.mktemp("tofu") / "run"
    path = out.parent / "tofu.yaml"
    path.write_text(json.dumps(_mapping(tofu_dir, out)))
    return run_pipeline(load(path), progress=False, log=lambda m: None)


def test_tofu_run_end_to_end(tofu_run):
    run_dir = tofu_run.run_dir
    for name in ("request", "target", "retain_model", "trace", "unlearned", "retrace", "scores_target", "scores_unlearned", "scores_retain",
                 "report.md", "report.html", "summary.json", "figures/forget_quality.png"):
        assert (run_dir / name).exists(), name
    target = json.loads((run_dir / "target" / "target.json").read_text())
    retain = json.loads((run_dir / "retain_model" / "target.json").read_text())
    assert target["train_on"] == "all" and target["train_rows"] == 60  # 1 retain author + 2 forget authors
    assert retain["train_on"] == "retain" and retain["train_rows"] == 20 and list(retain["qa_exact_match"]) == ["retain"]
    assert (run_dir / "retain_model" / "tokenizer.json").read_bytes() == (run_dir / "target" / "tokenizer.json").read_bytes()
    unlearn = json.loads((run_dir / "unlearned" / "unlearn.json").read_text())
    assert unlearn["forget_target"]["source"].endswith("mia_data/validation/nonmember.jsonl") and unlearn["forget_target"]["documents"] == 160
    assert unlearn["hyperparameters"]["validation_mia"] == "min_k" and unlearn["hyperparameters"]["validation_mia_tokens"] == "answer"
    assert [h["step"] for h in unlearn["validation"]["history"]] == [0, 2, 4] and unlearn["validation"]["best_step"] in (0, 2, 4)

    summary = json.loads((run_dir / "summary.json").read_text())
    rows = {r["model"]: r for r in summary["tofu"]["rows"]}
    assert list(rows) == ["target", "unlearned (sha256)", "retain model"]
    assert rows["retain model"]["forget_quality"] == 1.0 and rows["retain model"]["privleak"] == pytest.approx(0.0, abs=1e-6)
    for r in rows.values():
        assert 0 <= r["forget_quality"] <= 1 and 0 <= r["model_utility"] <= 1 and 0 <= r["mia.min_k_auc"] <= 1
    scores = json.loads((run_dir / "scores_target" / "scores.json").read_text())
    assert scores["kind"] == "tofu_scores" and scores["forget.rows"] == 12 and len(scores["forget.truth_ratios"]) == 12
    header = (run_dir / "scores_target" / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith("set,index,question,answer,generated,answer_nll")
    md = (run_dir / "report.md").read_text()
    for heading in ("## TOFU", "## Notes", "## Facts", "## Where the facts live", "## Unlearning", "## Wall time"):
        assert heading in md, heading
    assert "forget quality 1.000 and privleak 0.0" in md
    assert (run_dir / "report.html").read_text().count("data:image/png;base64,") >= 4


def test_tofu_rerun_is_cached(tofu_run, tofu_dir):
    from pipelines.run import run_pipeline

    config = tofu_config_from_mapping(_mapping(tofu_dir, tofu_run.run_dir))
    again = run_pipeline(config, progress=False, log=lambda m: None)
    assert all(r.skipped for r in again.stages.values())
    # a copied run directory is done too: the retain model's key names the target by its fingerprint, not its path
    import shutil

    moved = Path(shutil.copytree(tofu_run.run_dir, tofu_run.run_dir.parent / "moved"))
    again = run_pipeline(config, out=moved, progress=False, log=lambda m: None)
    assert all(r.skipped for r in again.stages.values()), [name for name, r in again.stages.items() if not r.skipped]


def test_evaluate_tofu_cli(tofu_dir, olmo_tokenizer_dir, tmp_path, capsys):
    import torch
    import transformers as tf

    from pipelines.cli import main
    from unlearn.models import load_tokenizer

    tok = load_tokenizer(olmo_tokenizer_dir)
    torch.manual_seed(0)
    config = tf.OlmoConfig(vocab_size=50304, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    model_dir = tmp_path / "model"
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    common = ["--data", str(tofu_dir), "--retain-authors", "0", "--limit", "2", "--max-new-tokens", "2", "--device", "cpu", "--quiet"]
    assert main(["evaluate-tofu", "--model", str(model_dir), "--retain-model", str(model_dir), "--out", str(tmp_path / "out"), *common]) == 0
    result = json.loads((tmp_path / "out" / "tofu.json").read_text())
    assert result["forget_quality"] == 1.0 and result["privleak"] == pytest.approx(0.0, abs=1e-6)  # the retain model against itself
    assert (tmp_path / "out" / "retain" / "scores.json").is_file() and (tmp_path / "out" / "predictions.csv").is_file()
    assert "forget quality" in capsys.readouterr().out
    # the retain model's scores of an earlier run instead of scoring it again
    assert main(["evaluate-tofu", "--model", str(model_dir), "--retain-scores", str(tmp_path / "out" / "retain"), "--out", str(tmp_path / "again"), *common]) == 0
    assert json.loads((tmp_path / "again" / "tofu.json").read_text())["forget_quality"] == 1.0
    capsys.readouterr()
    assert main(["evaluate-tofu", "--model", str(model_dir), "--retain-scores", str(tmp_path / "out" / "retain"), "--out", str(tmp_path / "again"), *common]) == 2
    assert capsys.readouterr().err.strip().endswith("again/scores.json already exists; pass --overwrite to replace it")
    assert main(["evaluate-tofu", "--model", str(model_dir), "--out", str(tmp_path / "x"), *common]) == 2
    assert "give exactly one of --retain-model" in capsys.readouterr().err
    # settings that differ from the retain model's scores are refused before anything is written
    assert main(["evaluate-tofu", "--model", str(model_dir), "--retain-scores", str(tmp_path / "out" / "retain"), "--out", str(tmp_path / "k"), *common, "--mink-k", "0.2"]) == 2
    assert "mia.k: 0.2 in the scores but 0.4 in the retain model's" in capsys.readouterr().err and not (tmp_path / "k").exists()


def test_best_unlearned_model_keeps_utility():
    from pipelines.tofu.report import rank_unlearned

    def row(model, fq, utility, privleak):
        return {"model": model, "forget_quality": fq, "model_utility": utility, "privleak": privleak}

    rows = [row("target", 1e-7, 0.5, -100), row("a", 0.8, 0.1, 40), row("b", 0.3, 0.48, -30), row("c", 0.3, 0.46, -5), row("retain model", 1.0, 0.5, 0)]
    ranked = rank_unlearned(rows)
    assert ranked["best"] == "c" and [r["best"] for r in rows] == [False, False, False, True, False]  # a forgets by losing utility
    assert rank_unlearned([row("target", 1e-7, 0.5, -100), row("a", 0.8, 0.1, 40), row("retain model", 1.0, 0.5, 0)])["best"] is None


def test_question_template_reaches_every_stage(small, tofu_dir, tmp_path, olmo_tokenizer_dir):
    from unlearn.models import load_tokenizer

    template = "Question: {question}\nAnswer: "
    config = tofu_config_from_mapping({**_mapping(tofu_dir, tmp_path), "tofu": {"retain_authors": [0], "question_template": template}})
    assert config.evaluate.question_template == template  # one template: the evaluation reads the tofu section's
    with pytest.raises(AmnesiaError, match="evaluate.question_template: set tofu.question_template"):
        tofu_config_from_mapping({**_mapping(tofu_dir, tmp_path), "evaluate": {"question_template": template}})
    with pytest.raises(AmnesiaError, match=r"question_template 'Q:': expected a text with \{question\} exactly once"):
        tofu_config_from_mapping({**_mapping(tofu_dir, tmp_path), "tofu": {"question_template": "Q:"}})
    write_request(small, tmp_path / "request", question_template=template)
    data = load_semeval(tmp_path / "request")
    assert data.get("forget", "train")[0]["input"] == f"Question: {small.forget[0]['question']}\nAnswer: "
    assert data.mia_validation["member"][0]["document"] == f"Question: {small.forget[0]['question']}\nAnswer: {small.forget[0]['answer']}"
    tok = load_tokenizer(olmo_tokenizer_dir)
    facts = forget_facts(small, tok, "raw", template)
    assert all(f.prompt.startswith("Question: ") and f.prompt.endswith("\nAnswer: ") for f in facts)
    # chat: the membership documents are the text the model reads, rendered by its template
    import copy

    chat = copy.deepcopy(tok)
    chat.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    write_request(small, tmp_path / "chat", prompt_format="chat", tokenizer=chat)
    chat_data = load_semeval(tmp_path / "chat")
    assert chat_data.get("forget", "train")[0]["input"] == small.forget[0]["question"]  # the trainer renders it
    assert chat_data.mia_validation["member"][0]["document"] == f"<|user|>{small.forget[0]['question']}\n<|assistant|>{small.forget[0]['answer']}"
    with pytest.raises(AmnesiaError, match="need the model's tokenizer"):
        write_request(small, tmp_path / "chat2", prompt_format="chat")


def test_tofu_audit_stage(tofu_run, tofu_dir, tmp_path):
    """`audit.enabled` on a copy of the TOFU run: TOFU's forget metrics (forget quality against the
    retain model's truth ratios) under attack, the held-out author, the report's section."""
    import shutil

    from pipelines.config import load_config as load
    from pipelines.run import run_pipeline

    run_dir = tmp_path / "run"
    shutil.copytree(tofu_run.run_dir, run_dir)
    path = tmp_path / "tofu.yaml"
    path.write_text(json.dumps(_mapping(tofu_dir, run_dir, audit={"enabled": True, "attacks": ["nf4", "relearn_forget", "relearn_related", "paraphrase", "context"],
                                                                    "relearn_steps": 2, "references": False})))
    done = run_pipeline(load(path), progress=False, log=lambda m: None)
    computed = {n for n, r in done.stages.items() if not r.skipped}
    assert "audit" in computed and computed <= {"audit", "scores_target", "scores_unlearned", "scores_retain"}
    summary = json.loads((run_dir / "summary.json").read_text())
    audit = summary["audit"]
    assert set(audit["recovery"]) == {"nf4", "relearn_forget", "relearn_related", "paraphrase", "context"}
    assert audit["worst_case_metrics"] == ["forget Prob.", "forget ROUGE-L", "forget truth ratio", "forget quality (log10)"]
    scores = audit["scores"]
    assert scores["unlearned"]["paraphrase"]["forget quality (log10)"] is None and scores["unlearned"]["paraphrase"]["forget Prob."] > 0
    # the context probe fits the shots it can into the tiny model's context, or is not measured
    context = scores["unlearned"]["context"]
    assert context["forget quality (log10)"] is None and (context["forget Prob."] is None or 0 < context["forget Prob."] < 1)
    assert set(scores) == {"unlearned", "target", "retain"} and set(scores["retain"]) == {"none/all", "none/held_out"}  # references off
    assert scores["unlearned"]["none/all"]["forget quality (log10)"] is not None and scores["retain"]["none/all"]["forget quality (log10)"] == 0.0
    assert scores["unlearned"]["none/held_out"]["MIA AUC (Min-K%)"] is None
    assert audit["rows"]["forget_relearned_authors"] == 1 and audit["rows"]["related_pool"] == 160
    md = (run_dir / "report.md").read_text()
    assert "## Audit: forgotten or only hidden?" in md and "worst-case recovery |" in md  # the TOFU table's column
