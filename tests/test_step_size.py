"""The automatic step size (unlearn.step_size): the search, the progress measure, the verdicts, and
the probe on the fixture target — chosen from validation rows only, recorded, resumed."""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest

from tracing.errors import AmnesiaError
from unlearn.api import run_unlearning, train_unlearning
from unlearn.config import UnlearnConfig
from unlearn.data import load_semeval
from unlearn.models import ModelOptions, load_model
from unlearn.step_size import CONSISTENCY, Probe, arrival_rate, next_rate, outcome, share_to_level

CPU = ModelOptions(device="cpu", dtype="float32")
FAST = dict(layers="0-1", kind="mlp", batch_size=8, grad_accum=1, max_length=128, logging_steps=50, seed=0)


# --------------------------------------------------------------------------- pure parts


def test_share_to_level_is_the_median_share_of_the_way():
    # rows at 0 and 1 nats, level 2: 0 → 1 is half its way, 1 → 1 none, 1 → 2 all
    assert share_to_level([0.0, 1.0, 1.0], [1.0, 1.0, 2.0], 2.0) == pytest.approx(0.5)
    # rows already past the level do not count; none left → NaN; a non-finite NLL → inf (diverged)
    assert math.isnan(share_to_level([2.0, 3.0], [2.5, 3.5], 1.0))
    assert share_to_level([0.0, 2.0], [0.5, 9.0], 1.0) == pytest.approx(0.5)
    assert share_to_level([0.01], [math.inf], 1.0) == math.inf


def search(share_of):
    """Run the probe search on a synthetic response (share of the way as a function of the rate)."""
    probes, rate = [], 1e-4
    while rate is not None and len(probes) < 20:
        probes.append(Probe(rate, share_of(rate), 0.0, 0.0))
        rate = next_rate(probes)
    return probes, arrival_rate(probes)


@pytest.mark.parametrize("arrive", [3e-6, 2e-4, 6.3e-3, 0.05])
def test_search_brackets_and_bisects_the_arrival_rate(arrive):
    """A sigmoid response in log-rate (the probes' shape): the arrival rate within ×/÷ 1.35 in at most 9 probes."""
    curve = lambda r: 1 / (1 + math.exp(-3 * (math.log(r / arrive) + 0.46)))  # share 0.8 at r = arrive
    probes, found = search(curve)
    assert found is not None and abs(math.log(found / arrive)) < math.log(1.35), (probes, found)
    assert len(probes) <= 9, probes


def test_search_stops_at_the_first_arrival_and_counts_broken_retain_rows_as_too_far():
    """Far above the arrival the response is not monotone (SmolLM2: 3 steps at 3e-3 overshoot, at 1e-2 land below the
    level with the retain rows broken); the search never goes past the first arriving rate."""
    shares = {1e-4: 0.003, 10 ** -3.5: 0.05, 1e-3: 0.27, 10 ** -2.5: 1.39, 1e-2: 0.79}
    share_of = lambda r: min(shares.items(), key=lambda kv: abs(math.log(kv[0] / r)))[1] if r > 1.5e-3 else 0.27 * (r / 1e-3) ** 1.5
    probes, found = search(share_of)
    assert max(p.lr for p in probes) <= 10 ** -2.5 * 1.0001 and 1e-3 < found < 10 ** -2.5, probes
    assert Probe(1e-2, 0.3, 2.0, 1.0, retain_share=0.6).arrived and not Probe(1e-2, 0.3, 2.0, 1.0, retain_share=0.1).arrived


def test_search_handles_divergence_and_a_model_that_never_moves():
    # diverging (inf) above 3e-3, reaching the level only just below it
    probes, found = search(lambda r: math.inf if r >= 3e-3 else min(1.0, r / 2e-3))
    assert found is not None and 1.2e-3 < found < 3e-3, probes
    # nothing moves at any rate: the search climbs to the largest rate and reports no arrival
    probes, found = search(lambda r: 0.0)
    assert found is None and max(p.lr for p in probes) == pytest.approx(1.0), probes


def test_outcome_verdicts_and_their_notes():
    moved_nothing = outcome([0.03] * 4, [0.0301] * 4, 3.14, 3.14, lr=1.5e-5)
    assert moved_nothing["verdict"] == "not_moved"
    assert "nothing was forgotten" in moved_nothing["note"] and "too small" in moved_nothing["note"] and "1.5e-05" in moved_nothing["note"]
    short = outcome([0.03] * 4, [1.64] * 4, 3.14, 3.14)
    assert short["verdict"] == "short" and "52 %" in short["note"]
    hidden = outcome([0.03] * 4, [3.0] * 4, 3.14, 3.2, validation_auc=1.0)  # the mean moved, the ranking did not (npo on the demo)
    assert hidden["verdict"] == "short" and "validation MIA AUC 1.00" in hidden["note"]
    over = outcome([0.03] * 4, [6.0] * 4, 3.0, 3.1, validation_auc=0.1)
    assert over["verdict"] == "overshot" and "past never-seen" in over["note"] and "AUC 0.10" in over["note"]
    ok = outcome([0.03] * 4, [3.0] * 4, 3.14, 3.2, validation_auc=0.55)
    assert ok["verdict"] == "reached" and ok["note"] is None
    assert outcome([0.03], [0.5], None, None)["verdict"] is None  # no level: nothing to judge against
    already = outcome([8.4] * 4, [8.0] * 4, 8.6, 8.6, lr=2e-3)  # a later C6 step: an earlier request took these rows to the level
    assert already["verdict"] == "already" and "already near the never-seen level" in already["note"] and "too small" not in already["note"]


def test_config_accepts_auto_or_a_finite_positive_number():
    assert UnlearnConfig().lr == "auto" and UnlearnConfig().epochs == "auto"
    assert UnlearnConfig(lr="3e-4").lr == 3e-4  # a string number (command line, YAML 1.1) is a number
    for bad in ("fast", math.inf, -1e-3, 0.0, math.nan):
        with pytest.raises(AmnesiaError, match="lr"):
            UnlearnConfig(lr=bad).check()
    with pytest.raises(AmnesiaError, match="epochs"):
        UnlearnConfig(epochs="many").check()
    with pytest.raises(AmnesiaError, match="sequential"):
        UnlearnConfig(schedule="sequential").check()
    assert UnlearnConfig.from_dict({"lr": 1, "epochs": "auto"}).lr == 1.0


# --------------------------------------------------------------------------- on the fixture target


def _copy_with_other_test_files(world, tmp_path):
    """The fixture world with its test rows (forget_train, retain_train) and test MIA files altered."""
    other = tmp_path / "other"
    shutil.copytree(world, other)
    for split in ("forget_train", "retain_train"):
        path = other / "data" / f"{split}-00000-of-00001.parquet"
        df = pd.read_parquet(path)
        df["output"] = df["output"].str[::-1]
        df.to_parquet(path, index=False)
    for name in ("member", "nonmember"):
        path = other / "mia_data" / f"{name}.jsonl"
        path.write_text(path.read_text(encoding="utf-8").replace("a", "o"), encoding="utf-8")
    return other


def test_automatic_rate_reads_only_validation_rows(fixture_world, fixture_target, tmp_path):
    """The probe trains on and measures validation rows only: changing every test row and test MIA file changes nothing."""
    config = UnlearnConfig(**FAST, max_steps=1)
    plans = []
    for world in (fixture_world, _copy_with_other_test_files(fixture_world, tmp_path)):
        model, tok = load_model(fixture_target, CPU, for_training=True)
        data = load_semeval(world)
        run = train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), config, progress=False, data=data)
        plans.append(run.report["step_size"])
    a, b = plans
    assert a["lr_source"] == "auto" and "forget_validation" in a["rows"], a
    assert len(a["probes"]) >= 2 and a["lr"] == b["lr"] and a["probes"] == b["probes"], (a, b)
    assert 1e-5 < a["lr"] < 1e-1 and a["reach_epochs"] == pytest.approx(3.0) and a["note"] is None, a
    # the rate covers the arrival displacement in reach_epochs epochs at the run's consistency
    assert a["lr"] == pytest.approx(a["arrive_displacement"] / (CONSISTENCY * 3.0 * a["steps_per_epoch"]))


def test_auto_rate_and_budget_are_recorded_and_forget(fixture_world, fixture_target, tmp_path):
    """lr auto + epochs auto on the fixture: the plan is in unlearn.json, the budget follows from it, the rows reach the level.

    "Reach" is read against the never-seen level the run started from: the level is re-measured on the
    current model and rises as unlearning makes every biography less likely (3.9 → 7.6 nats here), and
    the verdict's validation AUC reads 6 members — on one CPU's fixture the verdict said reached, on
    another short (moved 69 % of the way to the risen level, validation AUC 0.74) for rows at 5.3 nats."""
    config = UnlearnConfig(**FAST, eval_steps=15, patience=3)
    manifest = run_unlearning(fixture_target, fixture_world, tmp_path / "out", config, model_options=CPU, progress=False)
    plan = manifest["step_size"]
    assert plan["lr_source"] == "auto" and plan["epochs_source"] == "auto"
    assert plan["epochs"] == pytest.approx(round(plan["reach_epochs"] * config.budget_factor, 2))
    assert manifest["max_steps"] == plan["max_steps"] or manifest["validation"]["stopped_early"]
    outcome = manifest["outcome"]
    assert outcome["verdict"] != "not_moved" and outcome["forget_nll_after"] > outcome["level_before"], outcome
    assert outcome["moved"] > 0.5


def test_a_note_names_a_level_that_rose():
    """The demo on one CPU: rows 0.34 → 5.3 nats, past the level they started from (3.9), which rose to 7.6."""
    short = outcome([0.34] * 4, [5.3] * 4, 3.9, 7.6, validation_auc=0.74, lr=1.4e-3)
    assert short["verdict"] == "short" and "which rose from 3.9 during unlearning" in short["note"]
    assert "rose" not in outcome([0.34] * 4, [2.0] * 4, 3.9, 4.2, lr=1.4e-3)["note"]  # a level that barely moved is not named
    # reached, but by a level that rose with it (the demo: 3.89 → 6.24; SmolLM2: 2.70 → 3.09, not named)
    drifted = outcome([0.34] * 4, [5.2] * 4, 3.89, 6.24, validation_auc=0.57, lr=2.5e-3)
    assert drifted["verdict"] == "reached" and "rose from 3.89 to 6.24" in drifted["note"] and "×1.60" in drifted["note"]
    assert outcome([0.17] * 4, [2.84] * 4, 2.70, 3.09, validation_auc=0.54)["note"] is None


def test_a_rate_too_small_says_nothing_was_forgotten(fixture_world, fixture_target, tmp_path, caplog):
    config = UnlearnConfig(**FAST, lr=1e-9, max_steps=3)
    with caplog.at_level("WARNING", logger="unlearn.api"):
        manifest = run_unlearning(fixture_target, fixture_world, tmp_path / "out", config, model_options=CPU, progress=False)
    assert manifest["outcome"]["verdict"] == "not_moved"
    assert "nothing was forgotten" in manifest["outcome"]["note"]
    assert any("nothing was forgotten" in r.getMessage() for r in caplog.records)


def test_forgetting_past_never_seen_says_overshot(fixture_world, fixture_target, tmp_path):
    """A level far above never-seen text (a hand-set forget_target of 14 nats): the validation members end less likely than non-members.

    Never-seen text drifts up with the push (the fixture's non-members 4.4 → 7.5–10 nats), so a level
    of 9 nats ended at validation AUC 0.39 on one CPU (0.2 on another): 14 gives 0.18. Validated only at
    the start and the end (eval_steps 90 = the whole run): selecting on the task aggregate every 5
    steps kept step 30 of one fixture (task 0.72 against 0.71 at the end), before the rows had moved."""
    config = UnlearnConfig(**FAST, lr=3e-3, epochs=6, forget_target=14.0, eval_steps=90, select_by="task")
    manifest = run_unlearning(fixture_target, fixture_world, tmp_path / "out", config, model_options=CPU, progress=False)
    assert manifest["outcome"]["verdict"] == "overshot", manifest["outcome"]
    assert "past never-seen" in manifest["outcome"]["note"]


def test_auto_needs_a_level(fixture_world, fixture_target):
    model, tok = load_model(fixture_target, CPU, for_training=True)
    data = load_semeval(fixture_world)
    with pytest.raises(AmnesiaError, match="set unlearn.lr and unlearn.epochs"):
        train_unlearning(model, tok, data.get("forget", "train"), data.get("retain", "train"), UnlearnConfig(**FAST, forget_target="none"),
                         progress=False, data=data)


def test_the_report_and_tofu_notes_say_when_forgetting_did_not_arrive():
    from pipelines.report import unlearning_notes
    from pipelines.tofu.report import tofu_notes

    u = {"outcome": outcome([0.03] * 4, [0.0301] * 4, 3.14, 3.14, lr=1.5e-5),
         "step_size": {"note": "no probe reached the never-seen level, up to lr 1 (median share of the way 0.00)"}}
    notes = unlearning_notes(u)
    assert notes[0].startswith("Forgetting: Forget NLL moved 0.0 % of the way") and "nothing was forgotten" in notes[0]
    assert notes[1].startswith("Step size: no probe reached")
    row = lambda model, privleak, fq=0.9: {"model": model, "forget_quality": fq, "log10_forget_quality": 0.0, "model_utility": 0.5, "privleak": privleak}
    summary = {"tofu": {"rows": [row("target", -100, 1e-7), row("unlearned (sha256)", 52.0), row("retain model", 0.0, 1.0)]},
               "request": {"reference": "x"}, "unlearn": {"outcome": {"verdict": "reached", "note": None}}}
    [over] = [n for n in tofu_notes(summary) if n.startswith("unlearned")]
    assert "over-unlearning" in over and "far past never-seen: " in over and "unlearn.budget_factor" in over
    summary["tofu"]["rows"][1]["privleak"] = 3.6
    [fine] = [n for n in tofu_notes(summary) if n.startswith("unlearned")]
    assert "far past" not in fine and "membership looks like the retain model's" in fine
