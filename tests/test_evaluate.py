"""`qlr evaluate`'s scores, on real runs: divergences a scheduler could not have prevented."""

from qlr.agents.bench.evaluate import EvalConfig, evaluate_policy
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
    # Always raising blows up from either start; only the 1e-2 one was the policy's doing.
    assert runs[("policy", 100.0)]["diverged"] and runs[("policy", 1e-2)]["diverged"]
    overall = report.summary["overall"]
    assert (overall["divergences"], overall["avoidable_divergences"]) == (2, 1)

    hold = save_policy(make_policy(favour=1, interval=2), tmp_path / "hold.qlr")
    overall = evaluate_policy(hold, config).summary["overall"]
    assert (overall["divergences"], overall["avoidable_divergences"]) == (1, 0)
