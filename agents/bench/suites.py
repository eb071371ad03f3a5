"""Benchmark suites: what ``qlr compare`` runs, read from YAML and checked before any run.

A suite is a YAML file in ``experiments/configs/`` (see ``hansen.yaml`` for every key), found by
name as a shipped config (`qlr.agents.catalog`) or by path: problem entries (a family with its
sampling kwargs, or the kwargs a named distribution or a fold spec such as ``folds:cnn:test``
gives it), method names (as
`qlr.agents.bench.baselines.get_method` reads them), seeds, inner optimizers, initial rates, the
oracle's grid of constant rates and the budget. `load_suite` checks every key, family, method and
optimizer, so that a bad suite fails before its first run, with the valid choices.

This module loads neither `qlr.envs` nor the method registry at import: ``qlr compare --help``
reads `COUNTS` from here. Checking a suite loads them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qlr.agents._checks import check_keys
from qlr.agents.bench.budget import Budget
from qlr.agents.catalog import CONFIG_DIR, find_config

__all__ = [
    "COUNTS",
    "SUITE_DIR",
    "ProblemEntry",
    "Suite",
    "check_suite",
    "load_suite",
    "same_rate",
    "suite_path",
]

# The shipped suites: experiments/configs in a checkout, qlr/configs in an installed wheel.
SUITE_DIR = CONFIG_DIR
COUNTS = ("grad", "grad+func", "both", "examples")


@dataclass(frozen=True)
class ProblemEntry:
    """One kind of held-out problem: a family with its sampling kwargs, under a label."""

    label: str
    family: str
    kwargs: tuple  # sorted (key, value) items; (lo, hi) tuples are ranges, lists are choices


@dataclass
class Suite:
    """A benchmark suite, as read from YAML."""

    name: str
    problems: list[ProblemEntry]
    methods: tuple[str, ...]
    """Method names (see `qlr.agents.bench.baselines.METHODS`) or ``policy:PATH``."""
    description: str = ""
    seeds: int = 3
    """Held-out instances per problem entry."""
    optimizers: tuple[str, ...] = ("sgd",)
    initial_lrs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    oracle_grid: tuple[float, ...] = tuple(float(x) for x in np.logspace(-6, 1, 15))
    evals: int | None = 300
    """Budget in evaluations (gradient, or gradient + function, per `count`)."""
    examples: int | None = None
    """Budget in data examples; when set, `count` is ``examples`` and `evals` is unused."""
    count: str = "both"
    target_factor: float = 10.0
    """A run reaches its target when its loss falls to this multiple of the oracle's."""
    plot_problems: int = 4
    """Problem entries drawn in the example plots (seed 0 of each)."""

    def counts(self) -> tuple[str, ...]:
        """The budget counts this suite reports, in order."""
        if self.examples is not None:
            return ("examples",)
        return ("grad", "grad+func") if self.count == "both" else (self.count,)

    def budget(self, count: str) -> Budget:
        """The budget of one run under `count` (one of `counts`)."""
        if count == "examples":
            return Budget(examples=self.examples)
        if count == "grad":
            return Budget(grad_evals=self.evals)
        return Budget(total_evals=self.evals)


def same_rate(a: float, b: float) -> bool:
    """Whether two rates are one grid point: equal to 1e-9, as a rate read from YAML and one
    computed by a logspace may differ in their last bits."""
    return math.isclose(a, b, rel_tol=1e-9)


_SUITE_KEYS = {f.name for f in Suite.__dataclass_fields__.values()} - {"name"}
_ENTRY_KEYS = {"family", "label", "like", "kwargs"}


def suite_path(name: str | os.PathLike) -> Path:
    """The YAML file of suite `name`: a path, or the name of a shipped suite (``qlr.configs``).

    Raises:
        UsageError: (a ValueError) no such file or shipped suite, or a file of another kind (a
            training config); the message lists the shipped suites.
    """
    return find_config(name, "suite")


def load_suite(name: str | os.PathLike) -> Suite:
    """Read and check a suite file; unknown keys fail with the list of valid ones.

    Raises:
        ValueError: on a missing file, an unknown key, family or method, or a bad value.
    """
    path = suite_path(name)
    data = yaml.safe_load(path.read_text()) or {}
    check_keys(str(path), data, _SUITE_KEYS)
    if not data.get("problems") or not data.get("methods"):
        raise ValueError(f"{path}: a suite needs 'problems' and 'methods'")
    values: dict[str, Any] = dict(data)
    values["problems"] = [_entry(path, i, e) for i, e in enumerate(data["problems"])]
    for key in ("methods", "optimizers", "initial_lrs"):
        if key in values:
            values[key] = tuple(values[key])
    values["initial_lrs"] = tuple(float(x) for x in values.get("initial_lrs", Suite.initial_lrs))
    if "oracle_grid" in values:
        values["oracle_grid"] = _grid(values["oracle_grid"])
    suite = Suite(name=path.stem, **values)
    check_suite(suite)
    return suite


def check_suite(suite: Suite) -> None:
    """Fail early on anything that would only break in the middle of a run."""
    # The registry and the optimizers load qlr.envs (gymnasium): only when a suite is checked,
    # not when the command line starts.
    from qlr.agents.bench.baselines import get_method
    from qlr.envs.optimizers import OPTIMIZERS

    for method in suite.methods:
        get_method(method)
    bad = [o for o in suite.optimizers if o not in OPTIMIZERS]
    if bad:
        raise ValueError(f"unknown optimizers {bad}; valid: {list(OPTIMIZERS)}")
    if suite.count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {suite.count!r}")
    if suite.examples is None and (not suite.evals or suite.count == "examples"):
        raise ValueError("a suite needs a budget: 'evals', or 'examples' for count examples")
    if suite.seeds < 1 or not suite.initial_lrs or not suite.oracle_grid:
        raise ValueError("a suite needs seeds >= 1, initial_lrs and an oracle_grid")
    labels = [p.label for p in suite.problems]
    if len(set(labels)) != len(labels):
        raise ValueError(f"problem labels must be unique, got {labels}")


def _entry(path: Path, index: int, spec: Any) -> ProblemEntry:
    # loads qlr.envs: see check_suite
    from qlr.envs.distributions import FAMILIES, make_distribution

    if isinstance(spec, str):
        spec = {"family": spec}
    check_keys(f"{path}: problem {index}", spec, _ENTRY_KEYS)
    if "family" not in spec:
        raise ValueError(f"{path}: problem {index} needs 'family' (a family name)")
    family = spec["family"]
    if family not in FAMILIES:
        raise ValueError(f"{path}: unknown family {family!r}; valid: {sorted(FAMILIES)}")
    kwargs: dict[str, Any] = {}
    like = spec.get("like")
    if like is not None:
        # A named distribution or a fold spec ("folds:cnn:test"), as make_distribution reads it.
        try:
            dist = make_distribution(str(like))
        except ValueError as err:
            raise ValueError(f"{path}: problem {index}: like: {err}") from None
        if family not in dist.families:
            raise ValueError(f"{path}: distribution {like!r} has no family {family!r}")
        kwargs.update(dist.families[family][1])
    kwargs.update({k: _range_spec(v) for k, v in (spec.get("kwargs") or {}).items()})
    label = spec.get("label") or (f"{family}/{like}" if like else family)
    return ProblemEntry(label, family, tuple(sorted(kwargs.items())))


def _range_spec(value: Any) -> Any:
    """YAML to a sampling spec: ``[lo, hi]`` is a range, ``{choices: [...]}`` a choice."""
    if isinstance(value, dict):
        if set(value) != {"choices"}:
            raise ValueError(f"a mapping in kwargs must be {{choices: [...]}}, got {value}")
        return [_range_spec(v) for v in value["choices"]]
    if isinstance(value, list):
        if len(value) != 2:
            raise ValueError(f"a range is [lo, hi], got {value}; use {{choices: [...]}}")
        return tuple(value)
    return value


def _grid(value: Any) -> tuple[float, ...]:
    """A list of rates, or ``{logspace: [start, stop, num]}`` (decimal exponents)."""
    if isinstance(value, dict) and set(value) == {"logspace"}:
        start, stop, num = value["logspace"]
        return tuple(float(x) for x in np.logspace(start, stop, int(num)))
    return tuple(float(x) for x in value)
