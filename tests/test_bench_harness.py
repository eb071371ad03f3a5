"""One benchmark harness: `qlr evaluate` and `qlr compare` name, run and score a method alike.

Both read method names with `get_method`, run them with the same `Method.run` on the same
held-out instance, and the failures of a bad name say which name was bad.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

import pytest

from qlr.agents.bench import evaluate, runner
from qlr.agents.bench.baselines import get_method
from qlr.agents.bench.budget import Budget
from qlr.agents.bench.evaluate import EvalConfig, RunSpec, check_reference, policy_specs
from qlr.agents.bench.runs import DEFAULT_SEED, CompareSpec, build_problem, failed_result
from qlr.agents.bench.suites import ProblemEntry, Suite, check_suite
from qlr.agents.cli import main

QUADRATIC = ("quadratic", (("cond", 100.0), ("dim", 8)))
MINIBATCH = ("least_squares", (("batch_size", 16), ("dim", 5), ("n", 128)))


def _compare_spec(family: str, kwargs: tuple, method: str, budget: Budget) -> CompareSpec:
    return CompareSpec(
        suite="one",
        problem=family,
        family=family,
        kwargs=kwargs,
        seed=0,
        instance=DEFAULT_SEED,
        optimizer="sgd",
        lr=1e-2,
        method=method,
        budget=budget,
        counts=("grad",),
        role="method",
    )


@pytest.mark.parametrize("problem", [QUADRATIC, MINIBATCH], ids=["deterministic", "minibatch"])
@pytest.mark.parametrize("method", ["constant", "policy:default", "slope_rule", "teacher:10"])
def test_evaluate_and_compare_run_a_named_method_alike(problem, method) -> None:
    family, kwargs = problem
    steps = 30
    row = evaluate.execute(RunSpec(family, kwargs, DEFAULT_SEED, "sgd", 1e-2, steps, method))
    spec = _compare_spec(family, kwargs, method, Budget(grad_evals=steps))
    (compared,), curve = runner.execute(spec)
    assert compared["status"] in ("ok", "diverged") and curve is not None
    for key in ("initial_loss", "final_loss", "grad_evals", "examples", "extra_grad_evals"):
        assert row[key] == compared[key], key
    assert row["method"] == method
    assert (row["extra_grad_evals"] > 0) == method.startswith("teacher")


def test_evaluate_names_its_runs_as_a_suite_does() -> None:
    config = EvalConfig(distribution="quadratic", instances=1, optimizers=("sgd",), steps=10)
    told = replace(config, tell_budget=True)
    names = {s.method for c in (config, told) for s in policy_specs(c, "default")}
    assert names == {"policy:default", "policy_budget:default", "constant"}
    assert all(s.label == "policy" for s in policy_specs(told, "p.qlr") if s.method != "constant")
    names |= {check_reference(r) for r in ("teacher", "teacher:7", "slope_rule")}
    assert all(get_method(name).name == name for name in names)
    suite = Suite("one", [ProblemEntry("quadratic", *QUADRATIC)], tuple(sorted(names)))
    check_suite(suite)  # a suite takes every name evaluate runs


def test_evaluate_budgets_the_examples_of_its_steps_on_minibatches() -> None:
    minibatch = build_problem(MINIBATCH[0], dict(MINIBATCH[1]), DEFAULT_SEED)
    deterministic = build_problem(QUADRATIC[0], dict(QUADRATIC[1]), DEFAULT_SEED)
    assert evaluate.run_budget(minibatch, 30) == Budget(grad_evals=30, examples=30 * 16)
    assert evaluate.run_budget(deterministic, 30) == Budget(grad_evals=30)
    # Capped in evaluations, the teacher looks to the end of the run, not a fixed way ahead.
    assert not Budget(grad_evals=30, examples=480).examples_only
    assert Budget(examples=480).examples_only


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("armijoo", "'armijoo'"),
        ("teacher:0", "'teacher:0'"),
        ("teacher:ten", "'teacher:ten'"),
        ("slope_rule:speed=2", "'slope_rule:speed=2'"),
        ("slope_rule:up=fast", "'slope_rule:up=fast'"),
        ("policy:", "'policy:'"),
    ],
)
def test_a_bad_method_name_fails_naming_it(name: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        get_method(name)
    with pytest.raises(ValueError, match=re.escape(named)):
        check_suite(Suite("one", [ProblemEntry("quadratic", *QUADRATIC)], ("constant", name)))


def test_a_bad_reference_fails_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown reference 'cosine'"):
        check_reference("cosine")  # a method, but not a reference line
    with pytest.raises(ValueError, match=re.escape("'teacher:0'")):
        check_reference("teacher:0")  # the shared parser's own message
    with pytest.raises(SystemExit) as exit_:  # a usage error, before any run
        main(["evaluate", "default", "--references", "teacher:-3", "--jobs", "1"])
    assert exit_.value.code == 2 and "'teacher:-3'" in capsys.readouterr().err


def test_a_run_that_never_returned_has_the_rows_of_a_failed_method() -> None:
    spec = replace(
        _compare_spec(*QUADRATIC, "constant", Budget(grad_evals=5)), counts=("grad", "grad+func")
    )
    rows, curve = failed_result(spec, "WorkerCrashedError: gone")
    assert curve is None and [r["budget"] for r in rows] == ["grad", "grad+func"]
    assert all(r["status"] == "failed" and r["error"] == "WorkerCrashedError: gone" for r in rows)
    assert rows[0]["dim"] == 8  # the instance's description, rebuilt
    rows, _ = failed_result(replace(spec, family="no_such_family"), "KeyError")
    assert rows[0]["dim"] is None and rows[0]["status"] == "failed"


def test_the_modules_the_command_line_loads_leave_the_environment_unloaded() -> None:
    """`qlr --help` imports `compare` and `evaluate`: they load qlr.envs only when they run."""
    code = (
        "import sys; import qlr.agents.bench.compare, qlr.agents.bench.evaluate; "
        "loaded = [m for m in sys.modules if m.startswith(('qlr.envs', 'gymnasium')) "
        "or m == 'qlr.agents.bench.baselines']; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
