"""Running a suite: its runs as specs, each run on a fresh held-out instance, on a backend.

For each problem entry, seed, inner optimizer and initial learning rate, every method of the
suite runs on a freshly built held-out instance under the same budget (`make_specs` lists the
runs; seed ``i`` of problem entry ``j`` is instance ``DEFAULT_SEED + 1000 j + i``, with its own
data, initialisation and minibatch order). `execute` runs one spec: the method named by
`qlr.agents.bench.baselines.get_method`, through its `Method.run`, the same way ``qlr evaluate``
runs its methods. `run_all` executes the specs in worker processes here or as Ray tasks; the
rows come back in the order of the specs either way.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence

import numpy as np
import torch

from qlr.agents.bench import ray_backend
from qlr.agents.bench.baselines import get_method
from qlr.agents.bench.methods import Method, MethodResult
from qlr.agents.bench.runs import (
    BACKENDS,
    DEFAULT_SEED,
    CompareSpec,
    Result,
    build_problem,
    run_rows,
)
from qlr.agents.bench.suites import Suite, same_rate
from qlr.agents.bench.workers import run_parallel

__all__ = ["execute", "make_specs", "run_all"]


def make_specs(suite: Suite) -> tuple[list[CompareSpec], list[dict]]:
    """Runs to execute, and the rows of runs that do not apply (status n/a).

    Each instance is built once here to ask every method whether it applies.
    """
    specs: list[CompareSpec] = []
    skipped: list[dict] = []
    methods = [get_method(m) for m in suite.methods]
    if "constant" not in suite.methods:  # the oracle grid runs whatever the methods are
        methods.append(get_method("constant"))
    for j, entry in enumerate(suite.problems):
        for i in range(suite.seeds):
            instance = DEFAULT_SEED + 1000 * j + i
            problem = build_problem(entry.family, dict(entry.kwargs), instance)
            for method in methods:
                for optimizer in suite.optimizers if method.uses_optimizer else (None,):
                    why = method.not_applicable(problem, optimizer)
                    for lr, role in _rates(method, suite):
                        for counts in _count_groups(method, suite):
                            spec = CompareSpec(
                                suite=suite.name,
                                problem=entry.label,
                                family=entry.family,
                                kwargs=entry.kwargs,
                                seed=i,
                                instance=instance,
                                optimizer=optimizer,
                                lr=lr,
                                method=method.name,
                                budget=suite.budget(counts[0]),
                                counts=counts,
                                role=role,
                            )
                            if why is None:
                                specs.append(spec)
                            else:
                                skipped.extend(run_rows(spec, problem.info(), "n/a", why, None))
    return specs, skipped


def _rates(method: Method, suite: Suite) -> list[tuple[float | None, str]]:
    """(initial rate, role) pairs; the constant method also runs the rest of the oracle grid.

    Constant runs at initial rates are the ``constant`` method's (when the suite lists it) and
    feed the oracle when they lie on its grid; the other grid rates are ``oracle`` runs only.
    """
    if not method.uses_lr:
        return [(None, "method")]
    if method.name != "constant":
        return [(lr, "method") for lr in suite.initial_lrs]
    rates: list[tuple[float | None, str]] = []
    if "constant" in suite.methods:
        rates += [(lr, "method") for lr in suite.initial_lrs]
    taken = [lr for lr, _ in rates]
    rates += [
        (lr, "oracle") for lr in suite.oracle_grid if not any(same_rate(lr, x) for x in taken)
    ]
    return rates


def _count_groups(method: Method, suite: Suite) -> list[tuple[str, ...]]:
    """Budget counts per run: a method that never pays for trials runs once for all of them."""
    counts = suite.counts()
    return [counts] if not method.charges_trials else [(c,) for c in counts]


def execute(spec: CompareSpec) -> Result:
    """Run one spec in a fresh instance: its rows (one per budget count) and its curve."""
    torch.manual_seed(spec.instance)  # for any method that draws from torch's global RNG
    problem = build_problem(spec.family, dict(spec.kwargs), spec.instance)
    info = problem.info()
    method = get_method(spec.method)
    try:
        result = method.run(problem, spec.optimizer, spec.lr, spec.budget)
    except Exception as err:  # a failing method is an outcome to record, not a crash
        lines = traceback.format_exception_only(type(err), err)
        return run_rows(spec, info, "failed", lines[-1].strip()[:300], None), None
    status = "diverged" if result.diverged else "ok"
    return run_rows(spec, info, status, "", result), _curve(result)


def _curve(result: MethodResult) -> dict[str, np.ndarray]:
    return {
        "loss": np.asarray(result.losses, dtype=np.float64),
        "lr": np.asarray(result.lrs, dtype=np.float64),
        "grad": np.asarray(result.grad_trace, dtype=np.int64),
        "total": np.asarray(result.grad_trace, dtype=np.int64)
        + np.asarray(result.func_trace, dtype=np.int64),
        "examples": np.asarray(result.example_trace, dtype=np.int64),
    }


def run_all(
    specs: Sequence[CompareSpec],
    jobs: int = 1,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
) -> list[Result]:
    """Execute specs with a progress bar, in `jobs` spawned worker processes when > 1.

    With ``backend="ray"`` every spec is a Ray task instead (`qlr.agents.bench.ray_backend`), on a
    Ray instance started here with `jobs` CPUs or on the cluster at `address`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ValueError("an address is a Ray cluster's: it needs backend='ray'")
    if backend == "ray":
        return ray_backend.run_all(specs, jobs, progress, address, execute=execute)
    return run_parallel(execute, specs, jobs, progress=progress, desc="qlr compare")
