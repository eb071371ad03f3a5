"""The leave-families-out report (``qlr evaluate POLICY --held-out``): it scores a policy only on
families its training and selection never touched, per fold, beside the references, and its
numbers are those of its own rows."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
from conftest import build_policy

from qlr.agents.bench.evaluate import EvalConfig, instances
from qlr.agents.bench.heldout import FAMILY_OPTIMIZERS, plan_held_out
from qlr.agents.bench.scoring import score
from qlr.agents.bench.suites import load_suite
from qlr.agents.cli import main
from qlr.envs.distributions import FOLD_OF, FOLDS
from qlr.envs.optimizers import OPTIMIZERS
from qlr.policy import save_policy

# Trained on `train`, selected on `val` and on everything but two cheap families of two folds.
TRAINED_ON = ["train"]
SELECTED_ON = [
    "val",
    "folds:analytic,mlp,cnn,recurrent,transformer:test",
    "wine_softmax",
    "sparse_logistic",
    "matrix_completion",
]
HELD_OUT = {"linear": ["separable"], "factorization": ["deep_linear"]}
REFERENCES = ("constant", "slope_rule", "prodigy")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A hand-made policy (it records no training config) that holds the rate."""
    return save_policy(build_policy(favour=1, interval=2), tmp_path_factory.mktemp("p") / "p.qlr")


@pytest.fixture(scope="module")
def report(policy, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.json"
    argv = ["evaluate", str(policy), "--held-out", "--trained-on", *TRAINED_ON]
    argv += ["--selected-on", *SELECTED_ON, "--instances", "1", "--steps", "20"]
    argv += ["--optimizers", "sgd", "--initial-lrs", "1e-2", "1", "--jobs", "1"]
    argv += ["--out", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_the_report_scores_only_families_nothing_touched_grouped_by_fold(report) -> None:
    data, markdown = report
    families = {row["family"] for row in data["rows"]}
    assert families == {f for fs in HELD_OUT.values() for f in fs}
    plan = data["held_out"]
    assert plan["folds"] == HELD_OUT
    assert plan["fully_touched"] == [f for f in FOLDS if f not in HELD_OUT]
    # every other fold family was touched, and none of those has a single run
    assert set(plan["touched"]) == set(FOLD_OF) - families
    assert not families & set(plan["touched"])
    assert list(data["summary"]["folds"]) == list(HELD_OUT)
    assert set(data["summary"]["references"]) == set(REFERENCES)
    for reference in data["summary"]["references"].values():
        assert list(reference["folds"]) == list(HELD_OUT)
    assert data["command"].startswith(f"qlr evaluate {plan['policy']} --held-out")
    assert data["command"] in markdown.splitlines()[2]  # the header holds the command line
    for fold in HELD_OUT:
        assert f"| {fold} | **{plan['policy']}** |" in markdown
    for name in ("constant (start rate)", "slope_rule", "prodigy"):
        assert f"|  | {name} |" in markdown
    assert "## Against the slope rule, fold by fold" in markdown


def _expected(rows: list[dict], method: str, families: list[str]) -> dict:
    """A fold's scores recomputed from the raw rows."""
    oracle: dict[tuple, float] = defaultdict(lambda: math.inf)
    any_opt: dict[tuple, float] = defaultdict(lambda: math.inf)
    start, doomed = {}, set()
    for r in rows:
        if r["method"] == "constant":
            oracle[(r["family"], r["instance"], r["optimizer"])] = min(
                oracle[(r["family"], r["instance"], r["optimizer"])], r["final_loss"]
            )
            any_opt[(r["family"], r["instance"])] = min(
                any_opt[(r["family"], r["instance"])], r["final_loss"]
            )
            start[(r["family"], r["instance"], r["optimizer"], r["lr"])] = r["final_loss"]
            if r["diverged"] and r["steps_taken"] <= 2:
                doomed.add((r["family"], r["instance"], r["optimizer"], r["lr"]))
    mine = [r for r in rows if r["method"] == method and r["family"] in families]
    if method == "constant":  # the constant line: the runs at the starting rates
        mine = [r for r in mine if r["lr"] in (1e-2, 1.0)]
    vs_oracle, vs_start, diverged, avoidable = [], [], 0, 0
    for r in mine:
        key = (r["family"], r["instance"], r["optimizer"])
        best = any_opt[key[:2]] if r["optimizer"] is None else oracle[key]
        vs_oracle.append(score(r["final_loss"], best, r["initial_loss"]))
        if r["lr"] is not None:
            vs_start.append(score(r["final_loss"], start[(*key, r["lr"])], r["initial_loss"]))
        diverged += r["diverged"]
        avoidable += r["diverged"] and (*key, r["lr"]) not in doomed
    return {
        "runs": len(mine),
        "median_log10_vs_oracle": float(np.median(vs_oracle)),
        "mean_log10_vs_oracle": float(np.mean(vs_oracle)),
        "within_2x_of_oracle": float(np.mean(np.array(vs_oracle) <= math.log10(2))),
        "harmed": float(np.mean(np.array(vs_start) > math.log10(2))) if vs_start else None,
        "divergences": diverged,
        "avoidable_divergences": avoidable,
    }


@pytest.mark.parametrize("method", ["policy", *REFERENCES])
def test_the_per_fold_numbers_are_those_of_the_raw_rows(report, method) -> None:
    data, _ = report
    summary = data["summary"] if method == "policy" else data["summary"]["references"][method]
    for fold, families in HELD_OUT.items():
        got = summary["folds"][fold]
        want = _expected(data["rows"], method, families)
        assert want["runs"] == (1 if method == "prodigy" else 2)  # Prodigy: once per instance
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (fold, key)
    every = [f for fs in HELD_OUT.values() for f in fs]
    overall = _expected(data["rows"], method, every)
    assert summary["overall"]["median_log10_vs_oracle"] == pytest.approx(
        overall["median_log10_vs_oracle"], abs=1e-12
    )


def test_a_bad_fold_or_nothing_left_to_hold_out_is_a_clear_error(policy, capsys) -> None:
    base = ["evaluate", str(policy), "--held-out", "--jobs", "1"]
    cases = [
        (["--trained-on", "train", "--folds", "cnn,bogus"], "unknown folds ['bogus']"),
        # trained on the linear fold: none of its families is left to score
        (["--trained-on", "folds:linear", "--folds", "linear"], "no held-out family in folds"),
        (["--trained-on", *[f"folds:{f}" for f in FOLDS]], "leaves no held-out family"),
        ([], "records no training config"),  # a hand-made policy: say what it trained on
        (["--trained-on", "train", "--families", "mlp"], "scores only families neither touched"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main(base + extra)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err, (extra, err)
        if message != "unknown folds ['bogus']":
            assert str(policy) in err  # the message names the policy
    with pytest.raises(SystemExit):  # the report's options without the report
        main(["evaluate", str(policy), "--folds", "cnn", "--jobs", "1"])
    assert "add --held-out" in capsys.readouterr().err


def test_the_shipped_default_holds_out_what_its_record_and_its_recipe_did_not_touch() -> None:
    plan = plan_held_out("default")
    # `train` and `val` from its file; ackley and digits_mlp from its recipe's ablations
    assert {"ackley", "digits_mlp", "mlp", "digits_cnn"} <= set(plan.touched)
    assert "analytic" in plan.fully_touched and "analytic" not in plan.folds
    assert set(plan.families) == set(FOLD_OF) - set(plan.touched)
    assert plan.folds["cnn"] == ("cnn_wd",)


def test_every_fold_family_has_optimizers_people_use() -> None:
    assert set(FAMILY_OPTIMIZERS) == set(FOLD_OF)
    for family, optimizers in FAMILY_OPTIMIZERS.items():
        assert {"sgd", "adam"} <= set(optimizers) <= set(OPTIMIZERS), family


def test_a_family_gets_the_same_instances_whichever_folds_are_drawn() -> None:
    def seeds(distribution: str) -> list[int]:
        config = EvalConfig(distribution=distribution, instances=2, families=("deep_linear",))
        return [seed for _, _, seed in instances(config)]

    assert seeds("folds:factorization:test") == seeds("folds:linear,factorization:test")


def test_a_suite_takes_the_sizes_of_a_fold_spec(tmp_path) -> None:
    path = tmp_path / "folds.yaml"
    path.write_text(
        "problems:\n  - {family: cnn_wd, like: 'folds:cnn:test'}\nmethods: [constant]\n"
    )
    (entry,) = load_suite(path).problems
    assert dict(entry.kwargs)["channels"] == (12, 16)
    path.write_text("problems:\n  - {family: cnn_wd, like: 'folds:nope'}\nmethods: [constant]\n")
    with pytest.raises(ValueError, match="unknown folds"):
        load_suite(path)
