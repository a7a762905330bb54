"""UnlearnConfig: the paper's defaults, the YAML file that documents them, value checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tracing.errors import AmnesiaError
from unlearn.trainer import UnlearnConfig

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers():
    d = UnlearnConfig()
    assert (d.method, d.layers, d.lr, d.batch_size, d.grad_accum, d.epochs) == ("sha256", "0-5", 1.5e-5, 12, 10, 8)
    assert (d.alpha_a, d.alpha_b, d.alpha_c, d.alpha_min, d.alpha_params().alpha_max) == (0.3, 6.0, 0.8, 1.2, 2.8)
    d.check()


def test_paper_yaml_matches_the_defaults():
    config = UnlearnConfig.from_yaml(ROOT / "configs" / "unlearn_paper_olmo.yaml")
    assert config == replace(UnlearnConfig(), kind="mlp", bf16=True, alpha_max=2.8)
    assert isinstance(config.epochs, float) and config.lr == 1.5e-5


def test_from_dict_and_yaml_errors(tmp_path):
    with pytest.raises(AmnesiaError, match=r"unlearn config: unknown key 'learning_rate' \(known: alpha_a, "):
        UnlearnConfig.from_dict({"learning_rate": 1e-5})
    with pytest.raises(AmnesiaError, match="unlearn config: lr must be a number, got 'fast'"):
        UnlearnConfig.from_dict({"lr": "fast"})
    with pytest.raises(AmnesiaError, match="unlearn config: batch_size must be an integer, got 1.5"):
        UnlearnConfig.from_dict({"batch_size": 1.5})
    bad = tmp_path / "bad.yaml"
    bad.write_text("unlearn:\n  method: ascent\n")
    with pytest.raises(AmnesiaError, match=f"^{bad}: method 'ascent': expected one of sha256, ga, gd, kl, npo$"):
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
        ({"lr": 0.0}, "lr 0.0: expected a positive number"),
        ({"epochs": 0.0}, "epochs 0.0: expected a positive number (or max_steps > 0)"),
        ({"bf16": True, "fp16": True}, "bf16 and fp16 are both on: pick one"),
        ({"alpha_min": 3.0}, "alpha_min 3.0 / alpha_max 2.8: expected 0 < alpha_min <= alpha_max"),
        ({"alpha_variant": "code", "alpha_min": 2.5}, "alpha_min 2.5 / alpha_max 2.3: expected 0 < alpha_min <= alpha_max"),
        ({"npo_beta": 0.0}, "npo_beta 0.0: expected a positive number"),
        ({"forget_ceiling": -1.0}, "forget_ceiling -1.0: expected a positive loss value (or none)"),
        ({"chat_template": "always"}, "chat_template 'always': expected one of auto, on, off"),
        ({"schedule": "chunked"}, "schedule 'chunked': expected joint or sequential"),
        ({"save_total_limit": 0}, "save_steps 0 / save_total_limit 0: expected save_steps >= 0 and save_total_limit >= 1"),
    ],
)
def test_check_names_the_bad_value(change, message):
    with pytest.raises(AmnesiaError) as err:
        replace(UnlearnConfig(), **change).check()
    assert str(err.value) == message
