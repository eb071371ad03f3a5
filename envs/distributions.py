"""Named distributions over inner problems, for training and held-out evaluation.

A :class:`ProblemDistribution` is plain data (family -> (weight, sampling kwargs)); sampling
looks the factory up in ``FAMILIES`` at call time, so distributions pickle and can be sent to
subprocess environments.

What is held out (``"test"`` vs ``"train"``), and the ``"val"`` split that model selection and
ablations use, so that nothing is ever tuned on ``"test"``:

==============  ========================  ========================  =========================
family          ``train``                 ``val``                   ``test``
==============  ========================  ========================  =========================
quadratic       dim 5-50, cond 1-1e4      dim 50-100, cond 1-1e4    dim 100-200, cond 1-1e4
rosenbrock      dim 2-10                  dim 10-20                 dim 20-50
rastrigin       dim 2-10                  dim 10-20                 dim 20-50
quartic         dim 5-30                  dim 30-50                 dim 50-100
least_squares   dim 5-30, n 100-500       dim 30-50, n 200-800      dim 50-100, n 200-1000
logistic        dim 5-30, n 200-1000      dim 30-50, n 300-1500     dim 50-100, n 500-2000
mlp             hidden 16-32              hidden 32-64              hidden 64-128
ackley          never                     never                     dim 10-50
digits_mlp      never                     never                     hidden 32-64
==============  ========================  ========================  =========================

``val`` holds no unseen family: whether a controller transfers to a new family is measured on
``test`` only. All draw the loss scale log-uniformly in [1e-3, 1e3]. Data families use full
batches or minibatches of 16-64 (``train``) / 32-128 (``test``); ``"train_stochastic"``,
``"val_stochastic"`` and ``"test_stochastic"`` keep only the minibatch data families. Every
family is also available on its own, under its name, with its default ranges and scale 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .problems import FAMILIES, Problem

__all__ = [
    "DISTRIBUTIONS",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "TRAIN_FAMILIES",
    "ProblemDistribution",
    "make_distribution",
]

TRAIN_FAMILIES: tuple[str, ...] = (
    "quadratic",
    "rosenbrock",
    "rastrigin",
    "quartic",
    "least_squares",
    "logistic",
    "mlp",
)
"""Families that appear in ``"train"``."""

HELD_OUT_FAMILIES: tuple[str, ...] = ("ackley", "digits_mlp")
"""Families that never appear in training distributions, only in ``"test"``."""

SCALE_RANGE = (1e-3, 1e3)
_TRAIN_BATCHES = [None, 16, 32, 64]  # a quarter of data problems are full-batch
_TEST_BATCHES = [None, 32, 64, 128]


class ProblemDistribution:
    """A weighted mixture of problem families with their sampling kwargs.

    Args:
        families: Family name -> ``(weight, kwargs)``; kwargs go to the family's factory.
        name: Optional label shown in ``repr``.

    Raises:
        ValueError: On an unknown family or a weight that is not positive and finite.
    """

    def __init__(self, families: Mapping[str, tuple[float, dict[str, Any]]], name: str = ""):
        if not families:
            raise ValueError("a ProblemDistribution needs at least one family")
        for family, (weight, _) in families.items():
            _check_family(family)
            if not (np.isfinite(weight) and weight > 0):
                raise ValueError(f"weight of family {family!r} must be positive, got {weight!r}")
        self.families: dict[str, tuple[float, dict[str, Any]]] = {
            family: (float(weight), dict(kwargs)) for family, (weight, kwargs) in families.items()
        }
        self.name = name

    def sample(self, rng: np.random.Generator) -> Problem:
        """Pick a family by weight, then draw an instance of it, all from ``rng``."""
        names = list(self.families)
        weights = np.array([self.families[f][0] for f in names])
        family = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        return FAMILIES[family](rng, **self.families[family][1])

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"ProblemDistribution({label}{sorted(self.families)})"


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown problem family {family!r}; valid families: {sorted(FAMILIES)}")


def _with_scale(families: dict[str, tuple[float, dict[str, Any]]]) -> dict:
    return {f: (w, {**kw, "scale": SCALE_RANGE}) for f, (w, kw) in families.items()}


_MLP_TRAIN = {"hidden": (16, 32), "activation": ["tanh", "relu"]}
_MLP_TEST = {"hidden": (64, 128), "activation": ["tanh", "relu"]}


def _train(batches: list) -> dict[str, tuple[float, dict[str, Any]]]:
    return {
        "least_squares": (1.0, {"dim": (5, 30), "n": (100, 500), "batch_size": batches}),
        "logistic": (1.0, {"dim": (5, 30), "n": (200, 1000), "batch_size": batches}),
        "mlp": (1.0, {**_MLP_TRAIN, "batch_size": batches}),
    }


def _test(batches: list) -> dict[str, tuple[float, dict[str, Any]]]:
    return {
        "least_squares": (1.0, {"dim": (50, 100), "n": (200, 1000), "batch_size": batches}),
        "logistic": (1.0, {"dim": (50, 100), "n": (500, 2000), "batch_size": batches}),
        "mlp": (1.0, {**_MLP_TEST, "batch_size": batches}),
        "digits_mlp": (1.0, {"hidden": (32, 64), "batch_size": batches}),
    }


def _val(batches: list) -> dict[str, tuple[float, dict[str, Any]]]:
    return {
        "least_squares": (1.0, {"dim": (30, 50), "n": (200, 800), "batch_size": batches}),
        "logistic": (1.0, {"dim": (30, 50), "n": (300, 1500), "batch_size": batches}),
        "mlp": (1.0, {"hidden": (32, 64), "activation": ["tanh", "relu"], "batch_size": batches}),
    }


DISTRIBUTIONS: dict[str, ProblemDistribution] = {
    "train": ProblemDistribution(
        _with_scale(
            {
                "quadratic": (2.0, {"dim": (5, 50), "cond": (1.0, 1e4)}),
                "rosenbrock": (1.0, {"dim": (2, 10)}),
                "rastrigin": (1.0, {"dim": (2, 10)}),
                "quartic": (1.0, {"dim": (5, 30)}),
                **_train(_TRAIN_BATCHES),
            }
        ),
        "train",
    ),
    "val": ProblemDistribution(
        _with_scale(
            {
                "quadratic": (2.0, {"dim": (50, 100), "cond": (1.0, 1e4)}),
                "rosenbrock": (1.0, {"dim": (10, 20)}),
                "rastrigin": (1.0, {"dim": (10, 20)}),
                "quartic": (1.0, {"dim": (30, 50)}),
                **_val(_TEST_BATCHES),
            }
        ),
        "val",
    ),
    "test": ProblemDistribution(
        _with_scale(
            {
                "quadratic": (2.0, {"dim": (100, 200), "cond": (1.0, 1e4)}),
                "rosenbrock": (1.0, {"dim": (20, 50)}),
                "rastrigin": (1.0, {"dim": (20, 50)}),
                "quartic": (1.0, {"dim": (50, 100)}),
                "ackley": (1.0, {"dim": (10, 50)}),
                **_test(_TEST_BATCHES),
            }
        ),
        "test",
    ),
    "train_stochastic": ProblemDistribution(_with_scale(_train([16, 32, 64])), "train_stochastic"),
    "val_stochastic": ProblemDistribution(_with_scale(_val([32, 64, 128])), "val_stochastic"),
    "test_stochastic": ProblemDistribution(_with_scale(_test([32, 64, 128])), "test_stochastic"),
    **{family: ProblemDistribution({family: (1.0, {})}, family) for family in FAMILIES},
}
"""Named distributions: ``train``, ``val``, ``test``, ``*_stochastic``, one per family."""


def make_distribution(
    spec: str | Sequence[str] | Mapping[str, float] | ProblemDistribution,
) -> ProblemDistribution:
    """Build a distribution from a name, a family name, a list of families or ``{family: w}``.

    Lists and dicts use each family's default ranges (scale 1). A distribution passes through.

    Raises:
        ValueError: Naming the bad value and listing the valid choices.
    """
    if isinstance(spec, ProblemDistribution):
        return spec
    if isinstance(spec, str):
        if spec not in DISTRIBUTIONS:
            raise ValueError(
                f"unknown distribution or family {spec!r}; valid choices: {sorted(DISTRIBUTIONS)}"
            )
        return DISTRIBUTIONS[spec]
    if isinstance(spec, Mapping):
        return ProblemDistribution({f: (w, {}) for f, w in spec.items()})
    if isinstance(spec, Sequence) and all(isinstance(f, str) for f in spec):
        return ProblemDistribution({f: (1.0, {}) for f in spec})
    raise ValueError(
        f"cannot make a problem distribution from {spec!r}; expected a name in "
        f"{sorted(DISTRIBUTIONS)}, a list of family names or a {{family: weight}} dict"
    )
