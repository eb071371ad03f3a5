"""`qlr compare`: a tiny suite end to end, scoring, win rates, and the shipped suite files."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest

from qlr.agents.bench.baselines import get_method
from qlr.agents.bench.runner import make_specs
from qlr.agents.bench.runs import DEFAULT_SEED
from qlr.agents.bench.scoring import win_rates
from qlr.agents.bench.suites import SUITE_DIR, Suite, load_suite
from qlr.agents.cli import main

MISSING_POLICY = "policy:/nonexistent/policy.qlr"  # fails at load: a deliberately failing method
TINY_METHODS = [
    "constant",
    "cosine",
    "armijo",
    "nonmonotone",
    "newton",
    "hypergradient",
    "rule",
    "graduated_batch",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """One tiny `qlr compare` run through the command line, with a method that always fails."""
    out = tmp_path_factory.mktemp("compare") / "tiny"
    argv = ["compare", "--suite", "compare_tiny", "--jobs", "1", "--out", str(out)]
    argv += ["--methods", *TINY_METHODS, MISSING_POLICY, "--no-progress-bar"]
    assert main(argv) == 0
    with (out / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    return out, rows


def test_tiny_compare_writes_every_output(tiny) -> None:
    out, rows = tiny
    assert rows and set(rows[0]) >= {"method", "status", "final_loss", "grad_evals", "budget"}
    for name in ("summary.md", "summary.json"):
        assert (out / name).stat().st_size > 0
    for name in ("loss_vs_evals.png", "lr_trajectories.png", "scores.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in TINY_METHODS:
        events = list((out / "tensorboard" / method).glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0, method


def test_a_failing_method_is_recorded_and_the_rest_completes(tiny) -> None:
    out, rows = tiny
    failing = [r for r in rows if r["method"] == MISSING_POLICY]
    assert failing and all(r["status"] == "failed" for r in failing)
    assert all("PolicyFileError" in r["error"] for r in failing)
    for method in TINY_METHODS:
        ran = [r for r in rows if r["method"] == method and r["status"] in ("ok", "diverged")]
        assert ran, method
    summary = (out / "summary.md").read_text()
    failures = summary.split("## Failures")[1].split("##")[0]
    assert MISSING_POLICY in failures and "PolicyFileError" in failures
    for method in TINY_METHODS:
        assert f"| {method} |" in summary


def test_budgets_hold_and_line_searches_pay_for_trials(tiny) -> None:
    _, rows = tiny
    evals = load_suite("compare_tiny").evals
    ran = [r for r in rows if r["status"] in ("ok", "diverged")]
    for r in ran:
        grad, total = int(r["grad_evals"]), int(r["total_evals"])
        assert grad <= evals if r["budget"] == "grad" else total <= evals, r
    searches = [r for r in ran if r["method"] in ("armijo", "nonmonotone")]
    assert searches and all(int(r["func_evals"]) > 0 for r in searches)
    # under the gradient count a search gets more gradients than under grad + func
    by_budget = {
        b: sum(int(r["grad_evals"]) for r in searches if r["budget"] == b)
        for b in ("grad", "grad+func")
    }
    assert by_budget["grad"] > by_budget["grad+func"]


def test_scores_are_relative_to_the_best_constant(tiny) -> None:
    _, rows = tiny
    constants = [r for r in rows if r["method"] == "constant" and r["budget"] == "grad"]
    instances = {(r["problem"], r["instance"], r["optimizer"]) for r in constants}
    for problem, instance, optimizer in instances:
        runs = [
            r
            for r in constants
            if (r["problem"], r["instance"], r["optimizer"]) == (problem, instance, optimizer)
        ]
        best = min(float(r["final_loss"]) for r in runs)
        assert all(float(r["oracle_loss"]) == pytest.approx(best) for r in runs)
        assert min(float(r["log10_vs_oracle"]) for r in runs) == pytest.approx(0.0, abs=1e-12)
    # line searches have no inner optimizer: they are held to the best constant of any
    armijo = next(r for r in rows if r["method"] == "armijo" and r["status"] == "ok")
    assert armijo["optimizer"] == ""
    oracles = [
        float(r["oracle_loss"])
        for r in constants
        if (r["problem"], r["instance"]) == (armijo["problem"], armijo["instance"])
    ]
    assert float(armijo["oracle_loss"]) == pytest.approx(min(oracles))


def test_methods_that_do_not_apply_are_recorded_as_na(tiny) -> None:
    _, rows = tiny
    for r in rows:
        if r["method"] in ("armijo", "nonmonotone", "newton"):
            assert (r["status"] == "n/a") == (r["stochastic"] == "True"), r
        if r["method"] == "graduated_batch":
            assert (r["status"] == "n/a") == (r["stochastic"] == "False"), r


# ---------------------------------------------------------------------------------- scoring
def test_win_rates_pair_runs_on_the_same_slot_and_broadcast_optimizer_free_methods() -> None:
    suite = Suite(
        name="t",
        problems=[],
        methods=("constant", "armijo"),
        optimizers=("sgd", "adam"),
        initial_lrs=(0.1,),
    )

    def row(method, optimizer, lr, loss, status="ok"):
        return {
            "method": method,
            "problem": "p",
            "instance": 1,
            "optimizer": optimizer,
            "lr": lr,
            "final_loss": loss,
            "initial_loss": 1.0,
            "status": status,
        }

    rows = [
        row("constant", "sgd", 0.1, 0.5),
        row("constant", "adam", 0.1, 0.01),
        row("armijo", None, 0.1, 0.1),  # one run stands for both optimizers' slots
    ]
    rates = win_rates(rows, [get_method("constant"), get_method("armijo")], suite)
    assert rates["armijo"]["constant"] == {"rate": 0.5, "pairs": 2}
    assert rates["constant"]["armijo"] == {"rate": 0.5, "pairs": 2}
    rows[2]["final_loss"] = math.inf  # a divergence loses to any finite loss
    rates = win_rates(rows, [get_method("constant"), get_method("armijo")], suite)
    assert rates["armijo"]["constant"]["rate"] == 0.0


def test_optimizer_free_methods_run_once_per_instance_and_rate() -> None:
    suite = load_suite("compare_tiny")
    specs, _ = make_specs(suite)
    armijo = [s for s in specs if s.method == "armijo"]
    constant = [s for s in specs if s.method == "constant" and s.role == "method"]
    assert all(s.optimizer is None for s in armijo)
    # two budget counts, one run each; constant shares one run between both counts
    assert len(armijo) == 2 * 2 * len([p for p in suite.problems if "minibatch" not in p.label])
    assert all(s.counts == ("grad", "grad+func") for s in constant)


def test_the_oracle_grid_runs_even_without_the_constant_method() -> None:
    suite = replace(load_suite("compare_tiny"), methods=("armijo",), seeds=1)
    specs, _ = make_specs(suite)
    oracle = [s for s in specs if s.method == "constant"]
    per_instance = len(suite.oracle_grid) * len(suite.optimizers)
    assert len(oracle) == per_instance * len(suite.problems)
    assert all(s.role == "oracle" for s in oracle)


# ---------------------------------------------------------------------------------- suite files
@pytest.mark.parametrize("name", ["hansen", "nn", "graduated", "compare_tiny"])
def test_shipped_suites_load_and_use_held_out_instances(name: str) -> None:
    suite = replace(load_suite(name), seeds=1)
    specs, skipped = make_specs(suite)  # builds every instance once
    assert specs and all(s.instance >= DEFAULT_SEED for s in specs)
    assert all(r["status"] == "n/a" for r in skipped)
    if name != "compare_tiny":
        span = math.log10(max(suite.initial_lrs) / min(suite.initial_lrs))
        assert span >= 4, "initial rates must span at least four orders of magnitude"
        assert min(suite.oracle_grid) <= min(suite.initial_lrs)
        assert max(suite.oracle_grid) >= max(suite.initial_lrs)


def test_graduated_suite_budgets_examples() -> None:
    suite = load_suite("graduated")
    assert suite.counts() == ("examples",)
    assert {"graduated_lr", "graduated_batch", "graduated_hybrid"} <= set(suite.methods)


def test_bad_suites_fail_early_with_the_valid_choices(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("problems: [quadratic]\nmethods: [constant]\nsteps: 10\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_suite(bad_key)
    bad_method = tmp_path / "bad_method.yaml"
    bad_method.write_text("problems: [quadratic]\nmethods: [constant, armijoo]\n")
    with pytest.raises(ValueError, match="unknown method"):
        load_suite(bad_method)
    with pytest.raises(ValueError, match="no suite"):
        load_suite("no_such_suite")
    assert (SUITE_DIR / "hansen.yaml").is_file()
