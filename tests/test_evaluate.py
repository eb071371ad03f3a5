"""`qlr evaluate`'s scores: divergences a scheduler could not have prevented (on real runs), and
the same score as `qlr compare` for the same losses."""

import math

import pytest

from qlr.agents.bench.evaluate import EvalConfig, evaluate_policy, summarize
from qlr.agents.bench.scoring import score_rows
from qlr.agents.bench.suites import ProblemEntry, Suite
from qlr.policy import save_policy


def test_divergences_at_a_start_rate_that_blows_up_at_once_are_unavoidable(tmp_path, make_policy):
    config = EvalConfig(
        distribution="quadratic",
        instances=1,
        optimizers=("sgd",),
        initial_lrs=(1e-2, 100.0),  # fine, and far above the stable rate
        oracle_grid=(1e-2,),
        steps=60,
    )
    raise_always = save_policy(make_policy(favour=2, interval=2), tmp_path / "raise.qlr")
    report = evaluate_policy(raise_always, config)
    runs = {(r["method"], r["lr"]): r for r in report.rows if r["method"] != "oracle"}
    assert runs[("constant", 100.0)]["diverged"] and runs[("constant", 100.0)]["steps_taken"] <= 2
    assert not runs[("constant", 1e-2)]["diverged"]
    # Always raising overflows from either start, and the rollback guard brings both back: the
    # run goes on past the overflow, as a user's loop does, and ends finite.
    assert not runs[("policy", 100.0)]["diverged"] and not runs[("policy", 1e-2)]["diverged"]
    assert report.summary["overall"]["divergences"] == 0
    # Lost runs are split by the constant at their start: lost from 100 (the constant blew up
    # within two steps), unavoidable; lost from 1e-2, the policy's doing.
    lost_rows = [dict(r, diverged=True) for r in report.rows if r["method"] == "policy"]
    others = [r for r in report.rows if r["method"] != "policy"]
    lost = summarize(lost_rows, others)
    assert (lost["overall"]["divergences"], lost["overall"]["avoidable_divergences"]) == (2, 1)


# ---------------------------------------------------------------------------------- one score
GRID = (1e-3, 1e-2, 1e-1)


def _evaluate_score(final: float, constants: list[float], initial: float) -> float:
    """`qlr evaluate`'s score of a policy run ending at `final` (one instance, one optimizer)."""
    base = {"family": "quadratic", "instance": 7, "optimizer": "sgd", "initial_loss": initial}
    oracle_rows = [
        {**base, "method": "constant", "lr": lr, "final_loss": loss, "diverged": False}
        for lr, loss in zip(GRID, constants, strict=True)
    ]
    policy_rows = [{**base, "method": "policy", "lr": GRID[0], "final_loss": final}]
    policy_rows[0]["diverged"] = not math.isfinite(final)
    return summarize(policy_rows, oracle_rows)["overall"]["median_log10_vs_oracle"]


def _compare_score(final: float, constants: list[float], initial: float) -> float:
    """`qlr compare`'s score of a method run ending at `final` (one instance, one optimizer)."""
    suite = Suite(
        name="one",
        problems=[ProblemEntry("quadratic", "quadratic", ())],
        methods=("default", "constant"),
        optimizers=("sgd",),
        initial_lrs=GRID[:1],
        oracle_grid=GRID,
    )
    base = {"budget": "grad", "problem": "quadratic", "instance": 7, "optimizer": "sgd"}
    base |= {"initial_loss": initial, "grad_evals": 30, "total_evals": 30, "examples": 0}
    rows = [
        {**base, "method": "constant", "lr": lr, "final_loss": loss, "status": "ok"}
        for lr, loss in zip(GRID, constants, strict=True)
    ]
    status = "ok" if math.isfinite(final) else "diverged"
    rows.append({**base, "method": "default", "lr": GRID[0], "final_loss": final, "status": status})
    score_rows(rows, [None] * len(rows), suite)
    return rows[-1]["log10_vs_oracle"]


@pytest.mark.parametrize(
    ("final", "constants", "initial"),
    [
        (0.02, [0.5, 0.1, 2.0], 10.0),  # 0.02 against the best constant's 0.1
        (3.0, [0.5, 0.1, 2.0], 10.0),  # worse than the oracle
        (0.0, [0.5, 1e-20, 2.0], 10.0),  # both below the floor (1e-11): a tie
        (0.0, [0.5, 0.1, 2.0], 1e-3),  # an exact zero scores against the floor, not -inf
        (math.inf, [0.5, 0.1, 2.0], 10.0),  # a divergence: capped at +12
        (0.3, [math.inf, math.inf, math.inf], 10.0),  # every constant diverged
        (math.inf, [math.inf, math.inf, math.inf], 10.0),  # all diverged: a tie
    ],
)
def test_evaluate_and_compare_score_the_same_losses_alike(final, constants, initial) -> None:
    from_evaluate = _evaluate_score(final, constants, initial)
    from_compare = _compare_score(final, constants, initial)
    assert from_evaluate == from_compare
    floor = 1e-12 * initial + 1e-30
    best = min(min(constants), 1e300)
    if math.isfinite(final) or math.isfinite(best):
        expected = math.log10(min(max(final, floor), 1e300) / max(best, floor))
        assert from_compare == pytest.approx(min(max(expected, -12.0), 12.0), abs=1e-12)
    else:
        assert from_compare == 0.0


def test_references_are_scored_from_the_same_starts_beside_the_policy(make_policy) -> None:
    """The teacher (a reference line) and the slope rule get their own rows and summaries."""
    config = EvalConfig(
        distribution="quadratic",
        instances=1,
        optimizers=("sgd",),
        initial_lrs=(1e-4, 1e-2),
        oracle_grid=(1e-3, 1e-2, 1e-1, 1.0),
        steps=40,
    )
    report = evaluate_policy("default", config, jobs=1, references=["teacher:10", "slope_rule"])
    references = report.summary["references"]
    assert set(references) == {"teacher:10", "slope_rule"}
    teacher = references["teacher:10"]["overall"]
    assert teacher["runs"] == 2 and teacher["median_extra_grad_evals"] > 0
    assert references["slope_rule"]["overall"]["median_extra_grad_evals"] == 0
    # Far below the oracle's best constant is what looking ahead buys on a quadratic.
    assert teacher["median_log10_vs_start"] < 0
    assert {r["method"] for r in report.rows} == {"policy", "constant", "teacher:10", "slope_rule"}
    with pytest.raises(ValueError, match="unknown reference 'oracle'"):
        evaluate_policy("default", config, references=["oracle"])
