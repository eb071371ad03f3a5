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

These splits share families: seven of ``test``'s eleven are training families at larger sizes,
so they cannot say whether a controller transfers to a kind of problem it never saw. The
held-out folds can. :data:`FOLDS` groups every family, old and new, by kind:

=============  ===================================================================
fold           families
=============  ===================================================================
analytic       quadratic, rosenbrock, rastrigin, ackley, quartic
linear         least_squares, logistic, wine_softmax, sparse_logistic, separable
mlp            mlp, digits_mlp, cancer_mlp, autoencoder, label_noise
cnn            digits_cnn, cnn_wd
recurrent      gru_seq, lstm_lm, rnn_algorithmic, char_rnn_text
transformer    lm_transformer, transformer_classifier, char_lm_text
factorization  matrix_completion, deep_linear
=============  ===================================================================

A fold is what a controller could learn one way to handle: the same objective structure
(hand-written functions of one vector; convex losses of one linear map; dense feed-forward nets;
convolutions over images; recurrence over steps; attention over steps; products of matrices
with no nonlinearity between them), whatever the data. ``wine_softmax`` is a linear model
though it is built as a network, and ``label_noise`` and ``autoencoder`` are MLPs though their
data and loss differ; ``deep_linear`` goes with matrix completion rather than with the MLPs
because its loss, like a factorisation's, is a polynomial in the weights with a saddle at zero
and no activation to bound it. The text models go with their architectures, not with each
other, so that one held-out architecture is held out whole.

:func:`fold_distribution` (or :func:`make_distribution` with ``"folds:<fold>,...[:<split>]"``
or ``"folds-except:<fold>,...[:<split>]"``) draws from some folds at one of three sizes, so
that an ablation trains on some folds (``train``), selects its checkpoints and recipes on
folds it did not train on (``val``) and is scored on folds neither touched (``test``):

======================  =======================  =======================  =======================
family                  ``train``                ``val``                  ``test``
======================  =======================  =======================  =======================
``TRAIN_FAMILIES``      as ``train`` above       as ``val`` above         as ``test`` above
ackley                  dim 2-5                  dim 5-10                 dim 10-50
digits_mlp              hidden 8-16              hidden 16-32             hidden 32-64
cancer_mlp              hidden 8-16, 1 block     hidden 16-32,            hidden 32-64,
                                                 1-2 blocks               1-2 blocks
wine_softmax            13 -> 3, l2 1e-3         the same                 the same
lstm_lm                 hidden 16-24,            hidden 24-32,            hidden 32-64,
                        vocab 16-24, n 64-128    vocab 24-32, n 96-160    vocab 32-64, n 96-160
cnn_wd                  channels 4-8,            channels 8-12,           channels 12-16,
                        n 128-192                n 128-192                n 192-256
autoencoder             hidden 16-32             hidden 32-48             hidden 48-64
label_noise             hidden 16-24             hidden 24-32             hidden 32-64
sparse_logistic         dim 256-512,             dim 512-1024,            dim 1024-2048,
                        n 256-512                n 384-768                n 512-1024
separable               dim 5-20, n 100-300      dim 20-40, n 200-500     dim 40-80, n 300-800
rnn_algorithmic         hidden 16-24,            hidden 24-32,            hidden 32-48,
                        length 4-6               length 6-8               length 8-10
char_rnn_text           hidden 24-32, n 64-128   hidden 32-48, n 96-160   hidden 48-64, n 96-160
transformer_classifier  d_model 16-24,           d_model 24-32,           d_model 32-48,
                        context 12               context 12               context 16
char_lm_text            d_model 16-24, 1 layer,  d_model 24-32, 1 layer,  d_model 32-48, 2 layers,
                        n 64-128                 n 96-160                 n 96-160
matrix_completion       20-40 x 20-40, rank 2-4  40-60 x 40-60, rank 2-4  60-100 x 60-100,
                                                                          rank 2-6
deep_linear             hidden 8-12, depth 4-5   hidden 12-16, depth 5-6  hidden 16-24, depth 6-8
======================  =======================  =======================  =======================

Loss scales, minibatch sizes and weights follow the named splits: scale log-uniform in
[1e-3, 1e3]; data families full-batch or minibatches of 16-64 (``train``) / 32-128 (``val``,
``test``); the recurrent, transformer and CNN families minibatches of 8-32 / 16-64 and weight
:data:`MODEL_WEIGHT`, quadratics weight 2, everything else 1. The families added for the
folds (:data:`FOLD_ONLY_FAMILIES`) enter none of the named splits, which stay as they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .problems import FAMILIES, Problem

__all__ = [
    "DISTRIBUTIONS",
    "FAMILIES",
    "FOLDS",
    "FOLD_OF",
    "FOLD_ONLY_FAMILIES",
    "FOLD_SPLITS",
    "HELD_OUT_FAMILIES",
    "TRAIN_FAMILIES",
    "ProblemDistribution",
    "fold_distribution",
    "make_distribution",
    "other_folds",
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

FOLD_ONLY_FAMILIES: tuple[str, ...] = (
    "cnn_wd",
    "autoencoder",
    "matrix_completion",
    "deep_linear",
    "rnn_algorithmic",
    "transformer_classifier",
    "char_lm_text",
    "char_rnn_text",
    "sparse_logistic",
    "separable",
    "label_noise",
)
"""Families in none of the named splits (``train``, ``val``, ``test``), only in the folds."""

FOLDS: dict[str, tuple[str, ...]] = {
    "analytic": ("quadratic", "rosenbrock", "rastrigin", "ackley", "quartic"),
    "linear": ("least_squares", "logistic", "wine_softmax", "sparse_logistic", "separable"),
    "mlp": ("mlp", "digits_mlp", "cancer_mlp", "autoencoder", "label_noise"),
    "cnn": ("digits_cnn", "cnn_wd"),
    "recurrent": ("gru_seq", "lstm_lm", "rnn_algorithmic", "char_rnn_text"),
    "transformer": ("lm_transformer", "transformer_classifier", "char_lm_text"),
    "factorization": ("matrix_completion", "deep_linear"),
}
"""Every family, grouped by kind into held-out folds (see the module docstring for why)."""

FOLD_OF: dict[str, str] = {family: fold for fold, families in FOLDS.items() for family in families}
"""Family -> the fold it belongs to."""

FOLD_SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The sizes a fold distribution draws at (:func:`fold_distribution`)."""

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
    A name may also be a fold spec: ``"folds:cnn,mlp"`` is ``fold_distribution(["cnn", "mlp"])``,
    ``"folds:cnn:test"`` its ``test`` split, ``"folds-except:cnn:val"`` every other fold's
    ``val`` split.

    Raises:
        ValueError: Naming the bad value and listing the valid choices.
    """
    if isinstance(spec, ProblemDistribution):
        return spec
    if isinstance(spec, str):
        if spec in DISTRIBUTIONS:
            return DISTRIBUTIONS[spec]
        folds = _parse_folds(spec)
        if folds is not None:
            return folds
        raise ValueError(
            f"unknown distribution or family {spec!r}; valid choices: {sorted(DISTRIBUTIONS)}, "
            f"or 'folds:<fold>,...[:<split>]' / 'folds-except:<fold>,...[:<split>]' with folds "
            f"in {list(FOLDS)} and split in {list(FOLD_SPLITS)}"
        )
    if isinstance(spec, Mapping):
        return ProblemDistribution({f: (w, {}) for f, w in spec.items()})
    if isinstance(spec, Sequence) and all(isinstance(f, str) for f in spec):
        return ProblemDistribution({f: (1.0, {}) for f in spec})
    raise ValueError(
        f"cannot make a problem distribution from {spec!r}; expected a name in "
        f"{sorted(DISTRIBUTIONS)}, a list of family names or a {{family: weight}} dict"
    )


# --------------------------------------------------------------------------- held-out folds

_ANALYTIC_SIZES = {
    "quadratic": tuple(
        {"dim": dim, "cond": (1.0, 1e4)} for dim in ((5, 50), (50, 100), (100, 200))
    ),
    "rosenbrock": ({"dim": (2, 10)}, {"dim": (10, 20)}, {"dim": (20, 50)}),
    "rastrigin": ({"dim": (2, 10)}, {"dim": (10, 20)}, {"dim": (20, 50)}),
    "ackley": ({"dim": (2, 5)}, {"dim": (5, 10)}, {"dim": (10, 50)}),
    "quartic": ({"dim": (5, 30)}, {"dim": (30, 50)}, {"dim": (50, 100)}),
}

# family -> (weight, model family?, train kwargs, val kwargs, test kwargs), batch sizes and
# scale left out. The training families keep the named splits' ranges (the same objects), the
# held-out ones get smaller train and val sizes below their test sizes.
_FOLD_RANGES: dict[str, tuple[float, bool, dict, dict, dict]] = {
    **{
        family: (2.0 if family == "quadratic" else 1.0, False, *sizes)
        for family, sizes in _ANALYTIC_SIZES.items()
    },
    "least_squares": (
        1.0,
        False,
        {"dim": (5, 30), "n": (100, 500)},
        {"dim": (30, 50), "n": (200, 800)},
        {"dim": (50, 100), "n": (200, 1000)},
    ),
    "logistic": (
        1.0,
        False,
        {"dim": (5, 30), "n": (200, 1000)},
        {"dim": (30, 50), "n": (300, 1500)},
        {"dim": (50, 100), "n": (500, 2000)},
    ),
    "wine_softmax": (1.0, False, {}, {}, {}),
    "sparse_logistic": (
        1.0,
        False,
        {"dim": (256, 512), "n": (256, 512)},
        {"dim": (512, 1024), "n": (384, 768)},
        {"dim": (1024, 2048), "n": (512, 1024)},
    ),
    "separable": (
        1.0,
        False,
        {"dim": (5, 20), "n": (100, 300)},
        {"dim": (20, 40), "n": (200, 500)},
        {"dim": (40, 80), "n": (300, 800)},
    ),
    "mlp": (
        1.0,
        False,
        _MLP_TRAIN,
        {"hidden": (32, 64), "activation": ["tanh", "relu"]},
        _MLP_TEST,
    ),
    "digits_mlp": (1.0, False, {"hidden": (8, 16)}, {"hidden": (16, 32)}, {"hidden": (32, 64)}),
    "cancer_mlp": (
        1.0,
        False,
        {"hidden": (8, 16), "blocks": 1},
        {"hidden": (16, 32), "blocks": (1, 2)},
        {"hidden": (32, 64), "blocks": (1, 2)},
    ),
    "autoencoder": (
        1.0,
        False,
        {"hidden": (16, 32)},
        {"hidden": (32, 48)},
        {"hidden": (48, 64)},
    ),
    "label_noise": (
        1.0,
        False,
        {"hidden": (16, 24)},
        {"hidden": (24, 32)},
        {"hidden": (32, 64)},
    ),
    "digits_cnn": (MODEL_WEIGHT, True, _CNN_TRAIN, _CNN_VAL, _CNN_TEST),
    "cnn_wd": (
        MODEL_WEIGHT,
        True,
        {"channels": (4, 8), "n": (128, 192)},
        {"channels": (8, 12), "n": (128, 192)},
        {"channels": (12, 16), "n": (192, 256)},
    ),
    "gru_seq": (MODEL_WEIGHT, True, _GRU_TRAIN, _GRU_VAL, _GRU_TEST),
    "lstm_lm": (
        MODEL_WEIGHT,
        True,
        {"hidden": (16, 24), "vocab": (16, 24), "context": 16, "n": (64, 128)},
        {"hidden": (24, 32), "vocab": (24, 32), "context": 16, "n": (96, 160)},
        _LSTM_TEST,
    ),
    "rnn_algorithmic": (
        MODEL_WEIGHT,
        True,
        {"hidden": (16, 24), "length": (4, 6)},
        {"hidden": (24, 32), "length": (6, 8)},
        {"hidden": (32, 48), "length": (8, 10)},
    ),
    "char_rnn_text": (
        MODEL_WEIGHT,
        True,
        {"hidden": (24, 32), "n": (64, 128)},
        {"hidden": (32, 48), "n": (96, 160)},
        {"hidden": (48, 64), "n": (96, 160)},
    ),
    "lm_transformer": (MODEL_WEIGHT, True, _LM_TRAIN, _LM_VAL, _LM_TEST),
    "transformer_classifier": (
        MODEL_WEIGHT,
        True,
        {"d_model": (16, 24), "context": 12},
        {"d_model": (24, 32), "context": 12},
        {"d_model": (32, 48), "context": 16},
    ),
    "char_lm_text": (
        MODEL_WEIGHT,
        True,
        {"d_model": (16, 24), "layers": 1, "n": (64, 128)},
        {"d_model": (24, 32), "layers": 1, "n": (96, 160)},
        {"d_model": (32, 48), "layers": 2, "n": (96, 160)},
    ),
    "matrix_completion": (
        1.0,
        False,
        {"rows": (20, 40), "cols": (20, 40)},
        {"rows": (40, 60), "cols": (40, 60)},
        {"rows": (60, 100), "cols": (60, 100), "rank": (2, 6)},
    ),
    "deep_linear": (
        1.0,
        False,
        {"hidden": (8, 12), "depth": (4, 5)},
        {"hidden": (12, 16), "depth": (5, 6)},
        {"hidden": (16, 24), "depth": (6, 8)},
    ),
}


def _fold_entry(family: str, split: str) -> tuple[float, dict[str, Any]]:
    weight, model, *sizes = _FOLD_RANGES[family]
    kwargs = dict(sizes[FOLD_SPLITS.index(split)])
    if family not in FOLDS["analytic"]:
        if model:
            kwargs["batch_size"] = _MODEL_TRAIN_BATCHES if split == "train" else _MODEL_TEST_BATCHES
        else:
            kwargs["batch_size"] = _TRAIN_BATCHES if split == "train" else _TEST_BATCHES
    return weight, {**kwargs, "scale": SCALE_RANGE}


def _fold_names(folds: str | Sequence[str]) -> tuple[str, ...]:
    names = (folds,) if isinstance(folds, str) else tuple(folds)
    bad = [f for f in names if f not in FOLDS]
    if bad or not names:
        raise ValueError(f"unknown folds {bad or names!r}; valid folds: {list(FOLDS)}")
    return tuple(f for f in FOLDS if f in names)  # FOLDS order, duplicates dropped


def other_folds(folds: str | Sequence[str]) -> tuple[str, ...]:
    """Every fold of :data:`FOLDS` but ``folds``: what a leave-folds-out run trains on.

    Raises:
        ValueError: an unknown fold, or ``folds`` naming every fold (nothing would be left).
    """
    held = _fold_names(folds)
    rest = tuple(f for f in FOLDS if f not in held)
    if not rest:
        raise ValueError("leaving out every fold leaves nothing to draw from")
    return rest


def fold_distribution(folds: str | Sequence[str], split: str = "train") -> ProblemDistribution:
    """The families of ``folds`` at the sizes of ``split`` (see the module docstring).

    Example: train on every fold but the recurrent nets and the transformers, select on the
    recurrent nets' ``val`` sizes, score on the transformers' ``test`` sizes::

        train = fold_distribution(other_folds(["recurrent", "transformer"]), "train")
        select = fold_distribution("recurrent", "val")
        score = fold_distribution("transformer", "test")

    Args:
        folds: one fold name or several (keys of :data:`FOLDS`).
        split: ``"train"`` (smallest instances), ``"val"`` or ``"test"`` (largest).

    Raises:
        ValueError: an unknown fold or split.
    """
    names = _fold_names(folds)
    if split not in FOLD_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {list(FOLD_SPLITS)}")
    families = {f: _fold_entry(f, split) for fold in names for f in FOLDS[fold]}
    return ProblemDistribution(families, f"folds:{','.join(names)}:{split}")


def _parse_folds(spec: str) -> ProblemDistribution | None:
    """``folds:<fold>,...[:<split>]`` or ``folds-except:<fold>,...[:<split>]``, else None."""
    prefix, _, rest = spec.partition(":")
    if prefix not in ("folds", "folds-except") or not rest:
        return None
    listed, _, split = rest.partition(":")
    folds = [f.strip() for f in listed.split(",") if f.strip()]
    if prefix == "folds-except":
        folds = list(other_folds(folds))
    return fold_distribution(folds, split or "train")
