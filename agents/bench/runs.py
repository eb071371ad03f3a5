"""One benchmark run: the held-out instance it runs on, its spec, and the rows it records.

Seeds are held-out instances: `build_problem` makes instance ``seed`` of a family, the same every
time and in every process, and held-out seeds start at `DEFAULT_SEED` (training never draws
seeds this high). ``qlr compare`` runs one `CompareSpec` per run and records it as one row per
budget count it stands for (`run_rows`); a run that never returned, because its task or its
worker died, is recorded by `failed_result` in the same shape, so that every backend
(`qlr.agents.bench.runner`, `qlr.agents.bench.ray_backend`) writes the same rows.

This module loads neither `qlr.envs` nor the method registry at import: the backends and the
command line import it before any run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qlr.agents.bench.budget import Budget

if TYPE_CHECKING:
    from qlr.agents.bench.methods import MethodResult
    from qlr.envs.problems import Problem

__all__ = [
    "BACKENDS",
    "DEFAULT_SEED",
    "STATUSES",
    "CompareSpec",
    "Result",
    "build_problem",
    "failed_result",
    "run_rows",
]

DEFAULT_SEED = 1_000_003  # held-out instance seeds start here; training never uses seeds this high
STATUSES = ("ok", "diverged", "failed", "n/a")
BACKENDS = ("local", "ray")  # worker processes here, or Ray tasks (`qlr.agents.bench.ray_backend`)

Result = tuple[list[dict], dict | None]
"""What one compare run gives back: its rows (one per budget count) and its curve, or None."""


def build_problem(family: str, kwargs: dict, seed: int) -> Problem:
    """The held-out instance `seed` of `family`, identical every time it is built."""
    # qlr.envs loads gymnasium: only when an instance is built, not when the command line starts.
    from qlr.envs.distributions import ProblemDistribution

    return ProblemDistribution({family: (1.0, kwargs)}).sample(np.random.default_rng(seed))


@dataclass(frozen=True)
class CompareSpec:
    """One run, picklable for worker processes."""

    suite: str
    problem: str
    family: str
    kwargs: tuple
    seed: int
    instance: int
    optimizer: str | None
    lr: float | None
    method: str
    budget: Budget
    counts: tuple[str, ...]  # budget counts this run stands for (identical runs are shared)
    role: str  # "method", or "oracle" for grid rates that are not initial rates


def run_rows(
    spec: CompareSpec, info: dict, status: str, error: str, result: MethodResult | None
) -> list[dict]:
    """The rows of one run, one per budget count of `spec`.

    Args:
        spec: the run.
        info: the instance's description (``Problem.info()``: dimension, minibatch or not).
        status: one of `STATUSES`.
        error: why the run failed or did not apply; empty otherwise.
        result: what the method returned; None when it never returned.
    """
    row: dict[str, Any] = {
        "suite": spec.suite,
        "problem": spec.problem,
        "family": spec.family,
        "seed": spec.seed,
        "instance": spec.instance,
        "dim": info.get("dim"),
        "stochastic": info.get("stochastic"),
        "optimizer": spec.optimizer,
        "lr": spec.lr,
        "method": spec.method,
        "role": spec.role,
        "status": status,
        "error": error,
    }
    if result is not None:
        row.update(
            initial_loss=result.initial_loss,
            final_loss=result.final_loss,
            grad_evals=result.grad_evals,
            func_evals=result.func_evals,
            total_evals=result.grad_evals + result.func_evals,
            examples=result.examples_seen,
            final_lr=next((x for x in reversed(result.lrs) if math.isfinite(x)), None),
            wall_time=result.wall_time,
            # A reference line's own look at the future (the teacher), never charged to it.
            extra_grad_evals=result.extra.get("lookahead_grad_evals", 0),
        )
    return [{**row, "budget": count} for count in spec.counts]


def failed_result(spec: CompareSpec, reason: str) -> Result:
    """The rows of a run that never returned, with status ``failed`` and `reason`."""
    # The instance's description (dimension, minibatch or not) is rebuilt here, unless
    # building it is what failed.
    try:
        info = build_problem(spec.family, dict(spec.kwargs), spec.instance).info()
    except Exception:
        info = {}
    return run_rows(spec, info, "failed", reason, None), None
