"""Inner optimisation problems that a learning-rate controller is trained and tested on.

Each family has a problem class and a ``sample_<family>(rng, **ranges)`` factory that draws one
instance from a :class:`numpy.random.Generator` (same generator state, same instance).
``FAMILIES`` maps family names to these factories; the range arguments are described in
:mod:`.base`.

Objectives are non-negative. Analytic families are shifted so that the global minimum is 0;
``least_squares`` is shifted to a minimum of 0 in full-batch mode only (see its docstring), and
the classification families are left unshifted. Everything is multiplied by ``scale``.

The modules, each importing only the ones listed before it:

* :mod:`.base`: :class:`Problem`, :class:`VectorProblem`, :class:`DataProblem`,
  :class:`Minibatcher` and the range-spec helpers;
* :mod:`.analytic`: the analytic test functions;
* :mod:`.linear`: least squares and logistic regression on synthetic data;
* :mod:`.datasets`: the data sets the network families use, loaded or synthesised;
* :mod:`.modules`: the ``nn.Module`` networks;
* :mod:`.networks`: the network families (:class:`ModuleProblem` and its subclasses);
* :mod:`.families`: ``FAMILIES``.

Every public name is importable from this package directly.
"""

from .analytic import (
    Ackley,
    Quadratic,
    Quartic,
    Rastrigin,
    Rosenbrock,
    sample_ackley,
    sample_quadratic,
    sample_quartic,
    sample_rastrigin,
    sample_rosenbrock,
)
from .base import DataProblem, Minibatcher, Problem, Spec, VectorProblem
from .datasets import (
    DIGITS_TRAIN_SIZE,
    load_digits_split,
    load_standardised,
    markov_tokens,
    memory_task,
)
from .families import FAMILIES
from .linear import LeastSquares, Logistic, sample_least_squares, sample_logistic
from .modules import (
    CausalSelfAttention,
    RecurrentTagger,
    ResidualMLP,
    TransformerBlock,
    TransformerLM,
    make_mlp,
)
from .networks import (
    LSTMLM,
    CancerMLP,
    DigitsCNN,
    DigitsMLP,
    GRUSequence,
    LMTransformer,
    MLPClassifier,
    ModuleProblem,
    WineSoftmax,
    sample_cancer_mlp,
    sample_digits_cnn,
    sample_digits_mlp,
    sample_gru_seq,
    sample_lm_transformer,
    sample_lstm_lm,
    sample_mlp,
    sample_wine_softmax,
)

__all__ = [
    "DIGITS_TRAIN_SIZE",
    "FAMILIES",
    "LSTMLM",
    "Ackley",
    "CancerMLP",
    "CausalSelfAttention",
    "DataProblem",
    "DigitsCNN",
    "DigitsMLP",
    "GRUSequence",
    "LMTransformer",
    "LeastSquares",
    "Logistic",
    "MLPClassifier",
    "Minibatcher",
    "ModuleProblem",
    "Problem",
    "Quadratic",
    "Quartic",
    "Rastrigin",
    "RecurrentTagger",
    "ResidualMLP",
    "Rosenbrock",
    "Spec",
    "TransformerBlock",
    "TransformerLM",
    "VectorProblem",
    "WineSoftmax",
    "load_digits_split",
    "load_standardised",
    "make_mlp",
    "markov_tokens",
    "memory_task",
    "sample_ackley",
    "sample_cancer_mlp",
    "sample_digits_cnn",
    "sample_digits_mlp",
    "sample_gru_seq",
    "sample_lm_transformer",
    "sample_least_squares",
    "sample_logistic",
    "sample_lstm_lm",
    "sample_mlp",
    "sample_quadratic",
    "sample_quartic",
    "sample_rastrigin",
    "sample_rosenbrock",
    "sample_wine_softmax",
]
