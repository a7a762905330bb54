"""The bad-input matrix: the CLI, fed one bad input at a time, exits 2 with one line naming the
problem and writes nothing (every file under tmp_path and the fixture folders is unchanged).

Commands that load a model run with ``--quiet`` (progress bars are not messages). Most cases
call ``pipelines.cli.main`` in this process, capturing file descriptor 2 (so a library's log
handler that kept a reference to the original stderr is counted too) and every Python warning
as one more line, as a terminal would show them; "wrote nothing" compares sizes, mtimes and
content hashes of every file under the test folder and the fixtures; the cases marked ``SUBPROCESS``
also run as a real ``python -m pipelines.cli`` process, where import-time noise, logging and
warnings reach stderr as they would for a user. The NaN case is the one that does work before it
fails: it keeps its last good checkpoint, says where, and writes no model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]
FORGET_TRAIN = "data/forget_train-00000-of-00001.parquet"
RETAIN_TRAIN = "data/retain_train-00000-of-00001.parquet"
UNLEARN_FAST = ["--batch-size", "8", "--grad-accum", "1", "--device", "cpu", "--quiet"]
SUBPROCESS = {"layer_out_of_range", "mmlu_offline_without_copy", "config_with_more_layers_than_weights"}  # also run as a real process


@dataclass
class Ctx:
    tmp: Path
    world: Path
    target: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def world_copy(self) -> Path:
        return Path(shutil.copytree(self.world, self.tmp / "world"))

    def target_copy(self) -> Path:
        return Path(shutil.copytree(self.target, self.tmp / "model"))

    def rows(self, rel: str) -> list[dict]:
        return pq.read_table(self.world / rel).to_pylist()

    def jsonl_world(self, forget_text: str | None = None, forget_rows: list[dict] | None = None) -> Path:
        """A forget.jsonl / retain.jsonl folder from the fixture's train rows."""
        folder = self.tmp / "jsonl"
        folder.mkdir()
        forget = forget_rows if forget_rows is not None else self.rows(FORGET_TRAIN)[:6]
        (folder / "forget.jsonl").write_text(forget_text if forget_text is not None else "".join(json.dumps(r) + "\n" for r in forget))
        (folder / "retain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.rows(RETAIN_TRAIN)[:6]))
        return folder

    def run_config(self, **sections) -> Path:
        config = {"data": str(self.world), "model": str(self.target), "out": str(self.out), **sections}
        path = self.tmp / "run.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path


def _write_parquet(rows: list[dict], path: Path, schema: pa.Schema | None = None) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


# --------------------------------------------------------------------------- the cases
# Each returns (argv, a substring the error line must contain); extra: "offline" for MMLU.

def missing_data_dir(c: Ctx):
    return ["unlearn", "--model", str(c.target), "--data", str(c.tmp / "nodata"), "--out", str(c.out)], "nodata: data folder does not exist"


def parquet_missing_column(c: Ctx):
    world = c.world_copy()
    rows = [{k: v for k, v in r.items() if k != "task"} for r in c.rows(FORGET_TRAIN)]
    _write_parquet(rows, world / FORGET_TRAIN)
    return ["evaluate", "--model", str(c.target), "--data", str(world), "--out", str(c.out), "--mmlu", "off"], "forget_train-00000-of-00001.parquet: missing column 'task'"


def id_without_row_type(c: Ctx):
    world = c.world_copy()
    rows = c.rows(RETAIN_TRAIN)
    rows[3]["id"] = "person-0042"
    _write_parquet(rows, world / RETAIN_TRAIN)
    return ["trace", "--model", str(c.target), "--data", str(world), "--out", str(c.out)], "row 3: id 'person-0042' must end in sc<digit> or qa<digit>"


def empty_forget_split(c: Ctx):
    world = c.world_copy()
    schema = pq.read_schema(world / FORGET_TRAIN)
    _write_parquet([], world / FORGET_TRAIN, schema)
    return ["unlearn", "--model", str(c.target), "--data", str(world), "--out", str(c.out)], "forget_train-00000-of-00001.parquet: split has no rows"


def malformed_jsonl_line(c: Ctx):
    rows = c.rows(FORGET_TRAIN)[:3]
    data = c.jsonl_world(forget_text=json.dumps(rows[0]) + "\n" + '{"id": "x", "input": "broken\n' + json.dumps(rows[1]) + "\n")
    return ["evaluate", "--model", str(c.target), "--data", str(data), "--out", str(c.out), "--mmlu", "off"], "forget.jsonl: line 2: invalid JSON"


def mia_without_document(c: Ctx):
    world = c.world_copy()
    member = world / "mia_data" / "member.jsonl"
    lines = member.read_text().splitlines()
    lines[0] = json.dumps({"id": "p1", "text": json.loads(lines[0])["document"]})
    member.write_text("\n".join(lines) + "\n")
    return ["evaluate", "--model", str(c.target), "--data", str(world), "--out", str(c.out), "--mmlu", "off"], "member.jsonl: line 1: missing field 'document'"


def model_path_missing(c: Ctx):
    return ["evaluate", "--model", str(c.tmp / "nomodel"), "--data", str(c.world), "--out", str(c.out), "--mmlu", "off"], "nomodel: model path does not exist"


def model_without_config(c: Ctx):
    model = c.target_copy()
    (model / "config.json").unlink()
    return ["trace", "--model", str(model), "--data", str(c.world), "--out", str(c.out)], "model: no config.json"


def truncated_weights(c: Ctx):
    model = c.target_copy()
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:1000])
    return ["evaluate", "--model", str(model), "--data", str(c.world), "--out", str(c.out), "--mmlu", "off"], "model: cannot load the model (SafetensorError: "


def model_without_tokenizer(c: Ctx):
    model = c.target_copy()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    return ["trace", "--model", str(model), "--data", str(c.world), "--out", str(c.out)], "model: the tokenizer encodes text to nothing"


def unsupported_architecture(c: Ctx):
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(c.target)
    cfg = tf.XLNetConfig(vocab_size=len(tok), d_model=32, n_layer=2, n_head=2, d_inner=64)
    folder = c.tmp / "xlnet"
    tf.XLNetLMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return ["trace", "--model", str(folder), "--data", str(c.world), "--out", str(c.out), "--device", "cpu"], "TransformerBridge does not support architecture XLNetLMHeadModel"


def subject_not_in_prompt(c: Ctx):
    facts = c.tmp / "facts.json"
    facts.write_text(json.dumps([{"prompt": "What is Xanthe Yarrow's phone number?", "subject": "Xanthe Yarow", "answer": "9288840018"}]))
    return ["trace", "--model", str(c.target), "--data", str(facts), "--out", str(c.out)], "facts.json[0]: subject 'Xanthe Yarow' does not occur in prompt"


def no_facts_kept(c: Ctx):
    facts = c.tmp / "facts.jsonl"
    facts.write_text(json.dumps({"prompt": "What is Xanthe Yarrow's phone number?", "subject": "Xanthe Yarrow", "answer": "zebra"}) + "\n")
    return ["trace", "--model", str(c.target), "--data", str(facts), "--out", str(c.out), "--device", "cpu"], "no facts to trace: 1 candidate(s), none kept (1 wrong prediction)"


def layer_out_of_range(c: Ctx):
    return ["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", "4-9", *UNLEARN_FAST], "layers '4-9': layer 6 is out of range for a model with 6 layers (valid: 0-5)"


def layers_file_missing(c: Ctx):
    return ["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", str(c.tmp / "trace" / "layers.json")], "trace/layers.json: layers file does not exist"


def unknown_module_kind(c: Ctx):
    return ["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--kind", "ffn"], "argument --kind: invalid choice: 'ffn'"


def unknown_traced_kind(c: Ctx):
    return ["trace", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--kinds", "mlp,ffn"], "kinds mlp,ffn: expected distinct values among hidden, mlp, attn"


def output_is_input(c: Ctx):
    return ["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.target), "--overwrite"], "is inside the input model's folder"


def output_inside_data(c: Ctx):
    return ["trace", "--model", str(c.target), "--data", str(c.world), "--out", str(c.world / "trace")], f"is inside the data folder {c.world}"


def overwrite_a_foreign_folder(c: Ctx):
    folder = c.tmp / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work\n")
    return ["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(folder), "--overwrite"], "home: is not a folder written by `amnesia unlearn` (it has no unlearn.json)"


def scores_inside_model(c: Ctx):
    return ["evaluate", "--model", str(c.target), "--data", str(c.world), "--out", str(c.target / "scores"), "--mmlu", "off"], "is inside the input model's folder"


def unknown_config_key(c: Ctx):
    return ["run", str(c.run_config(unlearn={"lrr": 1e-3}))], "run.yaml: unlearn: unknown key 'lrr' (did you mean 'lr'?)"


def wrong_type_in_config(c: Ctx):
    return ["run", str(c.run_config(trace={"samples": "many"}))], "run.yaml: trace.samples: expected an integer, got 'many'"


def unsafe_yaml_tag(c: Ctx):
    path = c.tmp / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {c.tmp / 'pwned'}']\n")
    return ["run", str(path)], "evil.yaml: line 1 invalid YAML (could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system')"


def run_dir_not_a_run(c: Ctx):
    folder = c.tmp / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me\n")
    return ["run", str(c.run_config()), "--out", str(folder)], "notes: exists and is not an amnesia run directory"


def not_an_mmlu_copy(c: Ctx):
    return ["evaluate", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--mmlu", str(c.world)], "no MMLU subjects"


def mmlu_offline_without_copy(c: Ctx):
    return ["evaluate", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--mmlu", "hub", "--limit", "1"], "could not load their data from the Hub (offline mode", "offline"


def prompt_longer_than_context(c: Ctx):
    rows = c.rows(FORGET_TRAIN)[:4]
    rows[2]["input"] = " ".join(["Xanthe Yarrow was born on December 27, 1955."] * 40)
    data = c.jsonl_world(forget_rows=rows)
    return ["evaluate", "--model", str(c.target), "--data", str(data), "--out", str(c.out), "--mmlu", "off"], f"row {rows[2]['id']!r} (forget): the input is"


def pickle_weights_without_flag(c: Ctx):
    import torch
    from safetensors.torch import load_file

    model = c.target_copy()
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    return ["evaluate", "--model", str(model), "--data", str(c.world), "--out", str(c.out), "--mmlu", "off"], "only pickle weights (pytorch_model.bin), which can run code when loaded; convert to safetensors or pass --allow-pickle"


def remote_code_without_flag(c: Ctx):
    model = c.target_copy()
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "evil.py").write_text(f"open({str(c.tmp / 'pwned')!r}, 'w').write('ran')\n")
    return ["trace", "--model", str(model), "--data", str(c.world), "--out", str(c.out)], "the model needs its own Python code (auto_map), which runs only with --trust-remote-code"


def resume_without_checkpoint(c: Ctx):
    return ["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--resume"], "out.checkpoints: no complete checkpoint to resume from"


def run_model_not_found(c: Ctx):
    # neither a folder nor a Hub id the (offline or unreachable) Hub can supply: refused before the run directory exists
    return ["run", str(c.run_config(model="no-such-org/no-such-model"))], "no-such-org/no-such-model: no such model folder"


def _tofu_copy(c: Ctx) -> Path:
    from conftest import shared_path

    return Path(shutil.copytree(shared_path("data", "tofu"), c.tmp / "tofu"))


def _tofu_config(c: Ctx, data: Path, **extra) -> Path:
    config = {"benchmark": "tofu", "data": str(data), "out": str(c.out), "tofu": {"retain_authors": [0]},
              "target": {"steps": 1}, **extra}
    path = c.tmp / "tofu.yaml"
    path.write_text(json.dumps(config))
    return path


def tofu_missing_file(c: Ctx):
    data = _tofu_copy(c)
    (data / "forget01_perturbed.json").unlink()
    return ["run", str(_tofu_config(c, data))], "forget01_perturbed.json: missing (a TOFU folder holds full.json, forgetXX.json"


def tofu_forget_not_a_tail(c: Ctx):
    data = _tofu_copy(c)
    lines = (data / "forget01.json").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (data / "forget01.json").write_text("\n".join(lines) + "\n")
    return ["run", str(_tofu_config(c, data))], "forget01.json: line 1: question/answer 'What gender is author Basil Mahfouz Al-Kuwaiti?' differ from the last 40 rows of full.json"


def tofu_perturbed_answer_not_a_list(c: Ctx):
    data = _tofu_copy(c)
    lines = (data / "retain_perturbed.json").read_text().splitlines()
    row = json.loads(lines[4])
    row["perturbed_answer"] = row["perturbed_answer"][0]
    lines[4] = json.dumps(row)
    (data / "retain_perturbed.json").write_text("\n".join(lines) + "\n")
    return ["run", str(_tofu_config(c, data))], "retain_perturbed.json: line 5: field 'perturbed_answer' must be a non-empty list of strings, got str"


def tofu_model_without_retain_model(c: Ctx):
    from conftest import shared_path

    path = c.tmp / "tofu.yaml"
    path.write_text(json.dumps({"benchmark": "tofu", "data": str(shared_path("data", "tofu")), "out": str(c.out), "model": str(c.target)}))
    return ["run", str(path)], "tofu.yaml: 'model' needs 'retain_model' (the model fine-tuned on the retain set only"


def run_data_missing(c: Ctx):
    return ["run", str(c.run_config(data=str(c.tmp / "nodata")))], "nodata: data folder does not exist"


def forget_row_with_empty_input(c: Ctx):
    rows = c.rows(FORGET_TRAIN)[:6]
    rows[2]["input"] = ""
    return (["unlearn", "--model", str(c.target), "--data", str(c.jsonl_world(forget_rows=rows)), "--out", str(c.out)],
            "forget.jsonl: row 2 (id " + repr(rows[2]["id"]) + "): 'input' is empty (expected the prompt)")


def whitespace_output(c: Ctx):
    rows = c.rows(FORGET_TRAIN)[:6]
    rows[1]["output"] = "   "
    return (["evaluate", "--model", str(c.target), "--data", str(c.jsonl_world(forget_rows=rows)), "--out", str(c.out), "--mmlu", "off"],
            "'output' is empty (expected the expected answer; an empty one scores 0, which would read as forgotten)")


def id_in_forget_and_retain(c: Ctx):
    world = c.world_copy()
    retain = c.rows(RETAIN_TRAIN)
    retain[0]["id"] = c.rows(FORGET_TRAIN)[0]["id"]
    _write_parquet(retain, world / RETAIN_TRAIN)
    return (["evaluate", "--model", str(c.target), "--data", str(world), "--out", str(c.out), "--mmlu", "off"],
            f"id {retain[0]['id']!r} is in forget_train and in retain_train (an id names one row of one split)")


def run_name_dot_dot(c: Ctx):
    path = c.tmp / "dots.yaml"
    path.write_text(json.dumps({"name": "..", "data": str(c.world), "model": str(c.target)}))
    return ["run", str(path)], "name '..': expected a non-empty folder name"


def yaml_key_twice(c: Ctx):
    path = c.tmp / "twice.yaml"
    path.write_text(f"data: {c.world}\nmodel: {c.target}\nout: {c.out}\nunlearn:\n  seed: 1\n  seed: 2\n")
    return ["run", str(path)], "twice.yaml: line 6 invalid YAML (key 'seed' is given twice (lines 5 and 6); keep one)"


def negative_warmup(c: Ctx):
    return (["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", "0-1", "--warmup-steps", "-3"],
            "warmup_steps -3: expected an integer >= 0")


def compare_without_metrics(c: Ctx):
    empty = c.tmp / "empty.json"
    empty.write_text('{"forget-set": {}, "retain-set": {}}')
    return ["compare", str(empty), str(empty)], "empty.json: no metric to compare"


def out_under_a_file(c: Ctx):
    (c.tmp / "afile").write_text("x")
    return (["evaluate", "--model", str(c.target), "--data", str(c.world), "--out", str(c.tmp / "afile" / "sub"), "--mmlu", "off"],
            f"--out {c.tmp / 'afile' / 'sub'}: cannot be created: {c.tmp / 'afile'} is a file, not a folder")


def out_where_nothing_can_be_written(c: Ctx):
    return (["trace", "--model", str(c.target), "--data", str(c.world), "--out", "/proc/amnesia-trace"],
            "--out /proc/amnesia-trace: cannot be created: nothing can be written in /proc")


def run_out_under_a_file(c: Ctx):
    (c.tmp / "afile").write_text("x")
    return ["run", str(c.run_config(out=str(c.tmp / "afile" / "run")))], f"cannot be created: {c.tmp / 'afile'} is a file, not a folder"


def config_with_more_layers_than_weights(c: Ctx):
    model = c.target_copy()
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] += 2
    (model / "config.json").write_text(json.dumps(config))
    return (["evaluate", "--model", str(model), "--data", str(c.world), "--out", str(c.out), "--mmlu", "off"],
            f"{model}: the weights do not match config.json: 14 tensors missing (they would be randomly initialised): model.layers.6.")


def config_with_fewer_layers_than_weights(c: Ctx):
    model = c.target_copy()
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] -= 2
    (model / "config.json").write_text(json.dumps(config))
    return (["trace", "--model", str(model), "--data", str(c.world), "--out", str(c.out)],
            "14 tensors unexpected (they would be ignored): model.layers.4.")


def run_name_too_long(c: Ctx):
    path = c.tmp / "long.yaml"
    path.write_text(json.dumps({"name": "x" * 300, "data": str(c.world), "model": str(c.target)}))
    return ["run", str(path)], "300 bytes, too long for a folder name (expected at most 200)"


def infinite_lr(c: Ctx):
    return (["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", "0-1", "--lr", "inf"],
            "lr inf: expected auto or a positive, finite learning rate")


def negative_weight_decay(c: Ctx):
    return (["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", "0-1", "--weight-decay", "-0.1"],
            "weight_decay -0.1: expected a finite number >= 0")


def negative_max_steps(c: Ctx):
    return (["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", "0-1", "--max-steps", "-5"],
            "max_steps -5: expected -1 (no limit: --epochs decides) or a positive number of optimizer steps")


def compare_string_metric(c: Ctx):
    text = c.tmp / "text.json"
    text.write_text('{"forget-set": {"overall-knowledge-score": "0.5"}, "retain-set": {}}')
    return ["compare", str(text), str(text)], "text.json: forget-set/overall-knowledge-score is str '0.5' (expected a number)"


def unknown_method(c: Ctx):
    return (["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", "0-1", "--method", "gdd"],
            "method 'gdd': unknown (did you mean gd?); expected one of sha256, ga, gd, kl, npo, simnpo, wga, satimp, ceu, undial, pdu, rmu, idkdpo")


def method_arg_for_a_builtin(c: Ctx):
    return (["unlearn", "--model", str(c.target), "--data", str(c.world), "--out", str(c.out), "--layers", "0-1", "--method", "npo", "--method-arg", "beta=1"],
            "method_args ['beta']: method npo takes its settings from npo_beta")


def unknown_benchmark(c: Ctx):
    path = c.tmp / "bench.yaml"
    path.write_text(json.dumps({"benchmark": "tofo", "data": str(c.world), "model": str(c.target)}))
    return ["run", str(path)], "benchmark 'tofo': unknown (did you mean tofu?); expected one of semeval, tofu, muse"


def _muse_copy(c: Ctx) -> Path:
    from conftest import shared_path

    return Path(shutil.copytree(shared_path("data", "muse_news"), c.tmp / "muse"))


def muse_verbmem_without_gt(c: Ctx):
    data = _muse_copy(c)
    rows = json.loads((data / "verbmem" / "forget.json").read_text())
    del rows[3]["gt"]
    (data / "verbmem" / "forget.json").write_text(json.dumps(rows))
    return (["evaluate-muse", "--model", str(c.target), "--data", str(data), "--out", str(c.out)],
            "verbmem/forget.json: item 3: field 'gt' is missing (expected a non-empty string)")


def muse_qa_without_icl(c: Ctx):
    data = _muse_copy(c)
    (data / "knowmem" / "retain2_qa_icl.json").unlink()
    return (["evaluate-muse", "--model", str(c.target), "--data", str(data), "--out", str(c.out)],
            "knowmem/retain2_qa.json without knowmem/retain2_qa_icl.json or knowmem/retain_qa_icl.json")


def muse_run_asks_for_more_rows_than_there_are(c: Ctx):
    data = _muse_copy(c)
    path = c.tmp / "muse.yaml"
    path.write_text(json.dumps({"benchmark": "muse", "data": str(data), "out": str(c.out), "target": {"steps": 1}, "muse": {"forget_docs": 101}}))
    return ["run", str(path)], "verbmem/forget.json has 100 rows; muse.forget_docs / muse.qa ask for 101"


def muse_sust_sets_with_a_gap(c: Ctx):
    data = _muse_copy(c)
    (data / "sust").mkdir()
    (data / "sust" / "forget_2.json").write_text(json.dumps(["an article"]))
    return (["evaluate-muse", "--model", str(c.target), "--data", str(data), "--out", str(c.out)],
            "sust: no forget_1.json (expected MUSE's sust forget sets numbered forget_1.json, forget_2.json, ...)")


def muse_more_folds_than_documents(c: Ctx):
    data = _muse_copy(c)
    path = c.tmp / "muse.yaml"
    path.write_text(json.dumps({"benchmark": "muse", "data": str(data), "out": str(c.out), "target": {"steps": 1},
                                "muse": {"forget_docs": 4, "qa": 4, "sustainability": True}}))
    return ["run", str(path)], "muse.folds 4: the CPU-sized run has 3 forget training documents"


CASES = {f.__name__: f for f in (
    missing_data_dir, parquet_missing_column, id_without_row_type, empty_forget_split, malformed_jsonl_line,
    mia_without_document, model_path_missing, model_without_config, truncated_weights, model_without_tokenizer,
    unsupported_architecture, subject_not_in_prompt, no_facts_kept, layer_out_of_range, layers_file_missing,
    unknown_module_kind, unknown_traced_kind, output_is_input, output_inside_data, overwrite_a_foreign_folder,
    scores_inside_model, unknown_config_key, wrong_type_in_config, unsafe_yaml_tag, run_dir_not_a_run, not_an_mmlu_copy,
    mmlu_offline_without_copy, prompt_longer_than_context, pickle_weights_without_flag, remote_code_without_flag,
    resume_without_checkpoint, run_model_not_found, tofu_missing_file, tofu_forget_not_a_tail, tofu_perturbed_answer_not_a_list, tofu_model_without_retain_model, muse_verbmem_without_gt, muse_qa_without_icl,
    muse_run_asks_for_more_rows_than_there_are, muse_sust_sets_with_a_gap, muse_more_folds_than_documents,
    run_data_missing, forget_row_with_empty_input, whitespace_output, id_in_forget_and_retain, run_name_dot_dot, yaml_key_twice, negative_warmup,
    compare_without_metrics, out_under_a_file, out_where_nothing_can_be_written, run_out_under_a_file,
    config_with_more_layers_than_weights, config_with_fewer_layers_than_weights, run_name_too_long, infinite_lr, negative_weight_decay,
    negative_max_steps, compare_string_metric, unknown_method, method_arg_for_a_builtin, unknown_benchmark,
)}


# --------------------------------------------------------------------------- the harness


def tree(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under ``roots``: size, mtime and, for files, a hash of the contents (what "wrote nothing" compares)."""
    import hashlib

    out = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
            out[str(path)] = (st.st_size if path.is_file() else -1, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def offline(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("AMNESIA_MMLU_DIR", raising=False)


def quiet(argv: list[str]) -> list[str]:
    """``--quiet`` for the commands that load a model: progress bars are not messages."""
    return argv + ["--quiet"] if argv[0] in ("trace", "unlearn", "evaluate") and "--quiet" not in argv else argv


@contextlib.contextmanager
def terminal_logging():
    """Library log handlers write where a fresh process's would: to the stderr of now.

    transformers' handler keeps the stream it found when transformers was first imported — in a
    test run, a capture file of pytest's, whose lines no check would ever see. For the length of
    the block it writes to the current ``sys.stderr`` (under ``capfd``: file descriptor 2)."""
    import logging

    handlers = [h for h in logging.getLogger("transformers").handlers if type(h) is logging.StreamHandler]
    streams = [h.setStream(sys.stderr) for h in handlers]
    try:
        yield
    finally:
        for h, stream in zip(handlers, streams):
            h.setStream(stream)


def run_in_process(argv: list[str], capsys) -> tuple[int, list[str]]:
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh process: an earlier --quiet must not hide this one's bars
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught, terminal_logging():
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors exit
            code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()] + [f"warning: {w.message}" for w in caught]


def run_subprocess(argv: list[str]) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "AMNESIA_MMLU_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return r.returncode, [line for line in r.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_with_one_line_and_writes_nothing(name, tmp_path, fixture_world, fixture_target, capfd, request):
    ctx = Ctx(tmp_path, fixture_world, fixture_target)
    argv, expected, *extra = CASES[name](ctx)
    argv = quiet(argv)
    if "offline" in extra:
        request.getfixturevalue("offline")
    command = argv[0]
    before = tree(tmp_path, fixture_world, fixture_target)
    runs = [("in-process", *run_in_process(argv, capfd))]  # capfd: what reaches file descriptor 2, library log handlers included
    if name in SUBPROCESS:
        runs.append(("subprocess", *run_subprocess(argv)))
    for how, code, lines in runs:
        assert code == 2, (how, code, lines)
        assert len(lines) == 1, (how, lines)
        assert lines[0].startswith(f"amnesia {command}: error: "), (how, lines)
        assert expected in lines[0], (how, lines[0])
        assert tree(tmp_path, fixture_world, fixture_target) == before, f"{how}: {name} wrote something"
    assert not ctx.out.exists() and not (tmp_path / "pwned").exists()


def test_nan_loss_stops_keeps_the_last_good_checkpoint_and_says_so(tmp_path, fixture_world, fixture_target, capsys):
    """An extreme learning rate: step 1 is finite (and saved), step 2's loss is not. Training
    stops before applying it, checkpoint-1 stays, no model folder is written, exit 2."""
    from safetensors.torch import load_file

    out = tmp_path / "out"
    before = tree(fixture_world, fixture_target)
    argv = ["unlearn", "--model", str(fixture_target), "--data", str(fixture_world), "--out", str(out), "--method", "ga",
            "--layers", "0-1", "--lr", "1e30", "--max-steps", "4", "--save-steps", "1", "--seed", "0", *UNLEARN_FAST]
    code, lines = run_in_process(argv, capsys)
    assert code == 2, lines
    errors = [l for l in lines if l.startswith("amnesia unlearn: error: ")]
    ckpt = tmp_path / "out.checkpoints" / "checkpoint-1"
    assert errors == [lines[-1]], lines  # the last line, and the only error line (training logged before it)
    assert lines[-1] == (f"amnesia unlearn: error: training diverged: non-finite loss at step 2 (epoch 0); kept the weights of step 1; "
                         f"the last good checkpoint is {ckpt}; {out} was not written (lower --lr and rerun with --overwrite)")
    assert not out.exists() and tree(fixture_world, fixture_target) == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint-1"]  # nothing saved after the refused step
    weights = load_file(ckpt / "model.safetensors")
    assert all(bool(t.isfinite().all()) for t in weights.values())
    # the same command again is told to resume or start over, not to silently redo it
    code, lines = run_in_process(argv, capsys)
    assert code == 2 and lines == [f"amnesia unlearn: error: {ckpt.parent}: holds checkpoints of an earlier run; pass --resume to continue it or --overwrite to start over"]


@pytest.mark.parametrize("hub", ["unreachable", "offline"])
def test_mistyped_relative_model_path_fails_fast_naming_the_nearest_folder(hub, tmp_path, fixture_world, fixture_target, capsys, monkeypatch):
    """``--model amnesia-demo/targett`` reads as a Hub id; with the Hub unreachable (or offline mode)
    the answer is one line within seconds — not a minute of retries — naming the folder it missed."""
    import time

    import huggingface_hub

    from unlearn import hub as hub_module

    (tmp_path / "amnesia-demo").mkdir()
    (tmp_path / "amnesia-demo" / "target").symlink_to(fixture_target, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", hub == "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if hub == "offline" else "0")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    hub_module.probe.cache_clear()
    argv = ["trace", "--model", "amnesia-demo/targett", "--data", str(fixture_world), "--out", "out", "--quiet"]
    before = tree(tmp_path, fixture_world)
    start = time.perf_counter()
    code, lines = run_in_process(argv, capsys)
    seconds = time.perf_counter() - start
    hub_module.probe.cache_clear()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("amnesia trace: error: amnesia-demo/targett: no such model folder (did you mean amnesia-demo/target?), and "), lines
    assert ("offline (HF_HUB_OFFLINE=1)" if hub == "offline" else "Hugging Face Hub is unreachable") in lines[0], lines
    assert seconds < 5, f"{seconds:.1f} s"
    assert tree(tmp_path, fixture_world) == before and not (tmp_path / "out").exists()


def test_the_matrix_counts_what_a_library_logs(capfd):
    """transformers' log handler writes to the stream it found at import — in a test run a capture
    file of pytest's; the matrix points it at file descriptor 2 (``terminal_logging``) and counts it."""
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.modeling_utils")
    verbosity, level = hf_logging.get_verbosity(), logger.level
    hf_logging.set_verbosity_warning()  # as in a fresh process (an earlier --quiet command may have raised it)
    logger.setLevel(0)
    try:
        capfd.readouterr()
        with terminal_logging():
            logger.warning("one line of a load report")
        assert "one line of a load report" in capfd.readouterr().err
    finally:
        hf_logging.set_verbosity(verbosity)
        logger.setLevel(level)
