"""experiments/hf_transformer.py: a small GPT-2 in a Hugging Face Trainer, qlr against constant."""

import json
import math

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

from conftest import load_experiment  # noqa: E402

from qlr.policy import load_policy  # noqa: E402

STEPS = 20
START = 1e-3


@pytest.fixture(scope="module")
def script():
    return load_experiment("hf_transformer")


@pytest.fixture(scope="module")
def tiny(script):
    return script.Setup(n_train=64, n_heldout=32)


def test_results_files_and_qlr_hook_up(script, tiny, tmp_path):
    report = script.run(
        tmp_path,
        steps=STEPS,
        seeds=[0],
        starts=[START],
        arms=["constant", "qlr"],
        grid=[START, 1e-2],
        setup=tiny,
        verbose=False,
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps"] == STEPS and saved["starts"] == [START]
    assert [g["start"] for g in saved["grid"]] == [START, 1e-2]
    runs = {r["arm"]: r for r in saved["runs"]}
    assert sorted(runs) == ["constant", "qlr"] and len(saved["runs"]) == 2
    # The grid's run at the start is the constant arm's run for that seed: reused, not rerun.
    assert runs["constant"]["heldout_loss"] == saved["grid"][0]["heldout_loss"]
    for record in runs.values():
        assert len(record["train_losses"]) == len(record["lrs"]) == STEPS
        assert record["final_train_loss"] == pytest.approx(
            sum(record["train_losses"]) / STEPS  # fewer steps than the tail: all of them
        )
        # Better than uniform guessing after 20 steps, and no better than the chain itself.
        assert saved["floor"] < record["heldout_loss"] < math.log(tiny.vocab)
        assert record["trainer_max_steps"] == STEPS
    assert set(runs["constant"]["lrs"]) == {START}

    qlr = runs["qlr"]
    # The Trainer's step budget reached the scheduler, which stepped once per optimizer step.
    assert qlr["scheduler_total_steps"] == qlr["trainer_max_steps"] == STEPS
    assert qlr["scheduler_steps"] == STEPS
    interval = load_policy("default").decision_interval
    decisions = qlr["decisions"]
    assert [d["step"] for d in decisions] == list(range(interval, STEPS + 1, interval))
    # The rate qlr set at each decision is the rate the Trainer then trained with.
    for d in decisions:
        assert qlr["lrs"][d["step"] - 1] == pytest.approx(d["lr"], rel=1e-12)
    assert qlr["final_lr"] == qlr["lrs"][-1]

    rows = {row["arm"]: row for row in report["rows"]}
    assert rows["qlr"]["paired_seeds"] == 1
    below = qlr["heldout_loss"] <= runs["constant"]["heldout_loss"]
    assert rows["qlr"]["at_or_below_constant"] == int(below)
    text = (tmp_path / "results.md").read_text()
    assert "| 0.001 | qlr |" in text and "| 0.001 | constant |" in text
    verdict = "at or below" if below else "above"
    assert f"- Start 0.001: qlr's median held-out loss {qlr['heldout_loss']:.4f} is {verdict}" in (
        text
    )


def test_the_trainer_uses_the_rate_the_policy_sets(script, tiny, make_policy):
    """A policy that always doubles: the rate of every step is the start times 2 per decision."""
    policy = make_policy(factors=(0.5, 1.0, 2.0), favour=2, interval=5)
    data = script.make_data(tiny)
    record = script.train_run(data, tiny, "qlr", START, seed=0, steps=STEPS, policy=policy)
    # lrs[i] is the rate after step i + 1, when the decision at that step has been taken.
    expected = [START * 2 ** ((i + 1) // 5) for i in range(STEPS)]
    assert record["lrs"] == pytest.approx(expected, rel=1e-12)
    assert record["final_lr"] == pytest.approx(START * 16)
    assert record["scheduler_total_steps"] == STEPS
    assert [d["action"] for d in record["decisions"]] == [2] * (STEPS // 5)
