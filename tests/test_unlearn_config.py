"""UnlearnConfig: the paper's defaults, the YAML file that documents them, value checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tracing.errors import AmnesiaError
from unlearn.config import UnlearnConfig

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers_with_a_measured_step_size():
    d = UnlearnConfig()
    assert (d.method, d.layers, d.lr, d.batch_size, d.grad_accum, d.epochs) == ("sha256", "0-5", "auto", 12, 10, "auto")
    assert (d.reach_epochs, d.budget_factor, d.probe_steps, d.hold_factor, d.forget_spread) == (3.0, 3.0, 3, 0.3, True)
    assert (d.alpha_a, d.alpha_b, d.alpha_c, d.alpha_min, d.alpha_params().alpha_max) == (0.3, 6.0, 0.8, 1.2, 2.8)
    d.check()


def test_paper_yaml_is_the_defaults_with_the_papers_forget_term():
    config = UnlearnConfig.from_yaml(ROOT / "configs" / "unlearn_paper_olmo.yaml")
    paper_forget_term = dict(forget_target="none", forget_tokens="output", forget_eos=True, splits=["train"], lr_scheduler="linear")
    assert config == replace(UnlearnConfig(), kind="mlp", bf16=True, alpha_max=2.8, lr=1.5e-5, epochs=8.0, **paper_forget_term)
    assert isinstance(config.epochs, float) and config.lr == 1.5e-5
    from unlearn.semeval import paper_config

    assert replace(paper_config(), bf16=True, alpha_max=2.8) == config  # the submission entry point runs exactly this
    d = UnlearnConfig()  # ours: calibrated forgetting, constant lr
    assert (d.forget_target, d.forget_mode, d.forget_tokens, d.forget_eos, d.forget_update_steps, d.lr_scheduler, d.splits) == (
        "auto", "pull", "all", False, 1, "constant", ["train", "validation"])


def test_from_dict_and_yaml_errors(tmp_path):
    with pytest.raises(AmnesiaError, match=r"unlearn config: unknown key 'learning_rate' \(known: alpha_a, "):
        UnlearnConfig.from_dict({"learning_rate": 1e-5})
    with pytest.raises(AmnesiaError, match="lr 'fast': expected auto or a positive, finite learning rate"):
        UnlearnConfig.from_dict({"lr": "fast"})
    with pytest.raises(AmnesiaError, match="unlearn config: batch_size must be an integer, got 1.5"):
        UnlearnConfig.from_dict({"batch_size": 1.5})
    bad = tmp_path / "bad.yaml"
    bad.write_text("unlearn:\n  method: ascent\n")
    with pytest.raises(AmnesiaError, match=f"^{bad}: method 'ascent': unknown; expected one of sha256, ga, gd, kl, npo, simnpo, wga, satimp, ceu, undial, pdu, rmu, idkdpo$"):
        UnlearnConfig.from_yaml(bad)
    with pytest.raises(AmnesiaError, match="config file does not exist"):
        UnlearnConfig.from_yaml(tmp_path / "none.yaml")
    flat = tmp_path / "flat.yaml"
    flat.write_text("method: npo\nnpo_beta: 0.2\n")
    assert UnlearnConfig.from_yaml(flat).npo_beta == 0.2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batch_size": 0}, "batch_size 0: expected a positive integer"),
        ({"lr": 0.0}, "lr 0.0: expected auto or a positive, finite learning rate"),
        ({"lr": float("inf")}, "lr inf: expected auto or a positive, finite learning rate"),
        ({"epochs": 0.0}, "epochs 0.0: expected auto or a positive, finite number of passes over the forget set"),
        ({"bf16": True, "fp16": True}, "bf16 and fp16 are both on: pick one"),
        ({"max_steps": -5}, "max_steps -5: expected -1 (no limit: --epochs decides) or a positive number of optimizer steps"),
        ({"max_steps": 0}, "max_steps 0: expected -1 (no limit: --epochs decides) or a positive number of optimizer steps"),
        ({"warmup_steps": -1}, "warmup_steps -1: expected an integer >= 0"),
        ({"weight_decay": -0.1}, "weight_decay -0.1: expected a finite number >= 0"),
        ({"weight_decay": float("inf")}, "weight_decay inf: expected a finite number >= 0"),
        ({"alpha_min": 3.0}, "alpha_min 3.0 / alpha_max 2.8: expected 0 < alpha_min <= alpha_max"),
        ({"alpha_variant": "code", "alpha_min": 2.5}, "alpha_min 2.5 / alpha_max 2.3: expected 0 < alpha_min <= alpha_max"),
        ({"npo_beta": 0.0}, "npo_beta 0.0: expected a positive number"),
        ({"forget_target": -1.0}, "forget_target -1.0: expected auto, none or a positive per-token NLL"),
        ({"forget_target": "high"}, "forget_target 'high': expected auto, none or a positive per-token NLL"),
        ({"forget_mode": "push"}, "forget_mode 'push': expected stop or pull"),
        ({"forget_tokens": "some"}, "forget_tokens 'some': expected all, documents or output"),
        ({"forget_quantile": 1.0}, "forget_quantile 1.0: expected a number in (0, 1)"),
        ({"forget_update_steps": -1}, "forget_update_steps -1: expected an integer >= 0 (0 = measure the level once)"),
        ({"splits": ["test"]}, "splits ['test']: expected a non-empty list of train, validation"),
        ({"eval_steps": -2}, "eval_steps -2: expected an integer >= 0 (0 = no validation during training)"),
        ({"select_by": "best"}, "select_by 'best': expected final, mia, task or forgotten"),
        ({"select_floor": 1.5}, "select_floor 1.5: expected a forget knowledge between 0 and 1 (or leave it out)"),
        ({"select_floor": 0.2}, "select_floor 0.2: only select_by forgotten reads a floor (select_by is final); leave it out or set select_by forgotten"),
        ({"select_by": "forgotten"}, "select_by forgotten: keeps the first validated step at the floor, and eval_steps is 0 (no validation); set eval_steps (e.g. 5)"),
        ({"patience": -1}, "patience -1: expected an integer >= 0 (0 = never stop early)"),
        ({"prompt_format": "always"}, "prompt_format 'always': expected raw or chat"),
        ({"schedule": "chunked"}, "schedule 'chunked': expected joint or sequential"),
        ({"save_total_limit": 0}, "save_steps 0 / save_total_limit 0: expected save_steps >= 0 and save_total_limit >= 1"),
    ],
)
def test_check_names_the_bad_value(change, message):
    with pytest.raises(AmnesiaError) as err:
        replace(UnlearnConfig(), **change).check()
    assert str(err.value) == message


# The options of `amnesia unlearn` before its UnlearnConfig options were generated from the fields (and since;
# --allow-weight-mismatch came with the refusal of weights that do not match config.json).
UNLEARN_OPTIONS = [
    "--allow-pickle", "--allow-weight-mismatch", "--alpha-a", "--alpha-b", "--alpha-c", "--alpha-max", "--alpha-min", "--alpha-variant", "--batch-size", "--bf16", "--budget-factor",
    "--checkpoint-dir", "--chunk-size", "--data", "--device", "--dtype", "--epochs", "--eval-rows", "--eval-steps", "--forget-eos", "--forget-mode",
    "--forget-quantile", "--forget-reference", "--forget-spread", "--forget-target", "--forget-tokens", "--forget-update-steps", "--fp16", "--grad-accum",
    "--gradient-checkpointing", "--group-by-length", "--help", "--hold-factor", "--keep-checkpoints", "--kind", "--layers", "--logging-steps", "--lora",
    "--lora-alpha", "--lora-dropout", "--lora-r", "--lr", "--lr-scheduler", "--max-grad-norm", "--max-length", "--max-steps", "--method", "--method-arg",
    "--model", "--no-forget-eos", "--no-forget-spread", "--npo-beta", "--out", "--overwrite", "--patience", "--probe-steps", "--prompt-format", "--quiet",
    "--reach-epochs", "--report-to", "--resume", "--retain-ratio", "--save-steps", "--save-total-limit", "--schedule", "--seed", "--select-by", "--select-floor", "--splits",
    "--trace-dir", "--trace-k", "--trace-max-facts", "--trace-method", "--trace-samples", "--trust-remote-code", "--validation-mia",
    "--validation-mia-tokens", "--warmup-steps", "--weight-decay", "-h",
]


def test_every_setting_is_one_field_and_one_option():
    """Each UnlearnConfig field declares its help; `amnesia unlearn` has one option per field, its
    default and help taken from the field, and parsing no option gives the dataclass's defaults."""
    import argparse
    import dataclasses

    from pipelines.commands import unlearn as command
    from tracing.settings import flag, help_text, undeclared

    assert undeclared(UnlearnConfig) == []
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    assert sorted(o for a in p._actions for o in a.option_strings) == UNLEARN_OPTIONS
    by_dest = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(UnlearnConfig):
        if f.name == "method_args":  # a mapping: --method-arg KEY=VALUE, declared by the command
            continue
        action = by_dest[f.name]
        assert action.option_strings[0] == flag(f.name) and action.help == help_text(f).replace("%", "%%")
    assert "registered ones" in by_dest["method"].help and "sha256 = the paper's joint loss" in by_dest["method"].help
    assert by_dest["kind"].choices == ("auto", "mlp", "attn", "all") and by_dest["forget_spread"].default is True
    args = p.parse_args(["--model", "m", "--data", "d", "--out", "o"])
    assert command.config_from_args(args) == UnlearnConfig()
    args = p.parse_args(["--model", "m", "--data", "d", "--out", "o", "--lr", "1e-3", "--splits", "train", "--no-forget-spread", "--forget-eos",
                         "--report-to", "", "--alpha-max", "2.5"])
    assert command.config_from_args(args) == dataclasses.replace(UnlearnConfig(), lr=1e-3, splits=["train"], forget_spread=False, forget_eos=True,
                                                                   report_to=["none"], alpha_max=2.5)
