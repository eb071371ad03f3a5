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
lm_transformer  d_model 16-32, 1 layer,   d_model 32-40, 1 layer,   d_model 40-48, 2 layers,
                vocab 16-32, n 64-128     vocab 32-48, n 96-160     vocab 48-64, n 96-160
gru_seq         hidden 16-32, length 10   hidden 32-48, length 10   hidden 48-64, length 16
digits_cnn      channels 4-8, n 128-256   channels 8-12, n 192-320  channels 12-16, n 192-320
ackley          never                     never                     dim 10-50
digits_mlp      never                     never                     hidden 32-64
cancer_mlp      never                     never                     hidden 32-64, 1-2 blocks
wine_softmax    never                     never                     13 -> 3, l2 1e-3
lstm_lm         never                     never                     hidden 32-64, vocab 32-64
==============  ========================  ========================  =========================

``val`` holds no unseen family: whether a controller transfers to a new family is measured on
``test`` only. All draw the loss scale log-uniformly in [1e-3, 1e3]. Data families use full
batches or minibatches of 16-64 (``train``) / 32-128 (``val``, ``test``); the model families
(``lm_transformer``, ``gru_seq``, ``digits_cnn``, ``lstm_lm``: sequences of 16 tokens, 10-16
steps, 8x8 images) minibatches of 8-32 / 16-64 from smaller data sets, since each of their
examples costs more. ``"train_stochastic"``, ``"val_stochastic"`` and ``"test_stochastic"``
keep only the minibatch data families. Every family is also available on its own, under its
name, with its default ranges (``train``'s for the training families) and scale 1.
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
    "lm_transformer",
    "gru_seq",
    "digits_cnn",
)
"""Families that appear in ``"train"``."""

HELD_OUT_FAMILIES: tuple[str, ...] = (
    "ackley",
    "digits_mlp",
    "cancer_mlp",
    "wine_softmax",
    "lstm_lm",
)
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

# Weight of each model family (transformer LM, GRU, CNN) against 1 for each older data family.
# A decision on one of them costs 2-5 times one on the MLP and 7-22 times one on an analytic
# problem (experiments/results/bench_families.md): at weight 1 the three would take about
# four fifths of the environment's time in ``train``. At 0.2 they come in one episode in
# fourteen and take a little under half of it, and ``train`` still yields several hundred
# decisions per second on one thread, about what the DQN learns from.
MODEL_WEIGHT = 0.2

# The model families draw smaller minibatches from smaller data sets than the older data
# families: a step costs about linearly in the examples it touches, and their examples
# (sequences of tokens, images) are dear. Every data set holds more examples than the largest
# minibatch of its split, so each instance of *_stochastic really is a minibatch problem.
_MODEL_TRAIN_BATCHES = [None, 8, 16, 32]
_MODEL_TEST_BATCHES = [None, 16, 32, 64]
_LM_TRAIN = {"d_model": (16, 32), "layers": 1, "context": 16, "vocab": (16, 32), "n": (64, 128)}
_LM_VAL = {"d_model": (32, 40), "layers": 1, "context": 16, "vocab": (32, 48), "n": (96, 160)}
_LM_TEST = {"d_model": (40, 48), "layers": 2, "context": 16, "vocab": (48, 64), "n": (96, 160)}
_GRU_TRAIN = {"hidden": (16, 32), "length": 10, "n": (64, 128)}
_GRU_VAL = {"hidden": (32, 48), "length": 10, "n": (96, 160)}
_GRU_TEST = {"hidden": (48, 64), "length": 16, "n": (96, 160)}
_CNN_TRAIN = {"channels": (4, 8), "n": (128, 256)}
_CNN_VAL = {"channels": (8, 12), "n": (192, 320)}
_CNN_TEST = {"channels": (12, 16), "n": (192, 320)}
_LSTM_TEST = {"hidden": (32, 64), "vocab": (32, 64), "context": 16, "n": (96, 160)}


def _models(lm: dict, gru: dict, cnn: dict, batches: list) -> dict[str, tuple[float, dict]]:
    return {
        "lm_transformer": (MODEL_WEIGHT, {**lm, "batch_size": batches}),
        "gru_seq": (MODEL_WEIGHT, {**gru, "batch_size": batches}),
        "digits_cnn": (MODEL_WEIGHT, {**cnn, "batch_size": batches}),
    }


def _model_batches(batches: list, train: bool) -> list:
    """The model families' batch sizes: full batches where ``batches`` has them."""
    small = _MODEL_TRAIN_BATCHES if train else _MODEL_TEST_BATCHES
    return small if None in batches else [b for b in small if b is not None]


def _train(batches: list) -> dict[str, tuple[float, dict[str, Any]]]:
    return {
        "least_squares": (1.0, {"dim": (5, 30), "n": (100, 500), "batch_size": batches}),
        "logistic": (1.0, {"dim": (5, 30), "n": (200, 1000), "batch_size": batches}),
        "mlp": (1.0, {**_MLP_TRAIN, "batch_size": batches}),
        **_models(_LM_TRAIN, _GRU_TRAIN, _CNN_TRAIN, _model_batches(batches, train=True)),
    }


def _test(batches: list) -> dict[str, tuple[float, dict[str, Any]]]:
    return {
        "least_squares": (1.0, {"dim": (50, 100), "n": (200, 1000), "batch_size": batches}),
        "logistic": (1.0, {"dim": (50, 100), "n": (500, 2000), "batch_size": batches}),
        "mlp": (1.0, {**_MLP_TEST, "batch_size": batches}),
        "digits_mlp": (1.0, {"hidden": (32, 64), "batch_size": batches}),
        **_models(_LM_TEST, _GRU_TEST, _CNN_TEST, _model_batches(batches, train=False)),
        # held out: other data, other architectures
        "cancer_mlp": (1.0, {"hidden": (32, 64), "blocks": (1, 2), "batch_size": batches}),
        "wine_softmax": (1.0, {"batch_size": batches}),
        "lstm_lm": (
            MODEL_WEIGHT,
            {**_LSTM_TEST, "batch_size": _model_batches(batches, train=False)},
        ),
    }


def _val(batches: list) -> dict[str, tuple[float, dict[str, Any]]]:
    return {
        "least_squares": (1.0, {"dim": (30, 50), "n": (200, 800), "batch_size": batches}),
        "logistic": (1.0, {"dim": (30, 50), "n": (300, 1500), "batch_size": batches}),
        "mlp": (1.0, {"hidden": (32, 64), "activation": ["tanh", "relu"], "batch_size": batches}),
        **_models(_LM_VAL, _GRU_VAL, _CNN_VAL, _model_batches(batches, train=False)),
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
