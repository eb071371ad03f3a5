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
* :mod:`.linear`: least squares and logistic regression on synthetic data, also on sparse
  bag-of-features and on linearly separable data;
* :mod:`.datasets`: the data sets the network families use, loaded or synthesised
  (scikit-learn's bundled sets, Markov and algorithmic sequences, standard-library text);
* :mod:`.modules`: the ``nn.Module`` networks;
* :mod:`.networks`: the first network families (:class:`ModuleProblem` and its subclasses,
  :class:`RegressionProblem` for the squared-error ones);
* :mod:`.feedforward`: a normalised CNN for weight decay, an autoencoder, an MLP on noisy
  labels;
* :mod:`.factorization`: matrix completion and deep linear networks;
* :mod:`.sequences`: a recurrent net on algorithmic tasks, a transformer classifier and
  character-level language models on real text;
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
    ALGORITHMIC_TASKS,
    CHAR_VOCAB,
    CLASSIFICATION_TASKS,
    DIGITS_TRAIN_SIZE,
    STDLIB_TEXT_FILES,
    algorithmic_task,
    load_digits_split,
    load_standardised,
    markov_tokens,
    memory_task,
    sequence_classes,
    stdlib_text,
    text_windows,
)
from .factorization import (
    DeepLinear,
    MatrixCompletion,
    sample_deep_linear,
    sample_matrix_completion,
)
from .families import FAMILIES
from .feedforward import (
    Autoencoder,
    NoisyLabelMLP,
    NormalizedCNN,
    sample_autoencoder,
    sample_cnn_wd,
    sample_label_noise,
)
from .linear import (
    LeastSquares,
    Logistic,
    Separable,
    SparseLogistic,
    sample_least_squares,
    sample_logistic,
    sample_separable,
    sample_sparse_logistic,
)
from .modules import (
    CausalSelfAttention,
    RecurrentTagger,
    ResidualMLP,
    TransformerBlock,
    TransformerClassifier,
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
    RegressionProblem,
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
from .sequences import (
    AlgorithmicRNN,
    CharRNNLM,
    CharTransformerLM,
    SequenceTransformer,
    sample_char_lm_text,
    sample_char_rnn_text,
    sample_rnn_algorithmic,
    sample_transformer_classifier,
)

__all__ = [
    "ALGORITHMIC_TASKS",
    "CHAR_VOCAB",
    "CLASSIFICATION_TASKS",
    "DIGITS_TRAIN_SIZE",
    "FAMILIES",
    "LSTMLM",
    "STDLIB_TEXT_FILES",
    "Ackley",
    "AlgorithmicRNN",
    "Autoencoder",
    "CancerMLP",
    "CausalSelfAttention",
    "CharRNNLM",
    "CharTransformerLM",
    "DataProblem",
    "DeepLinear",
    "DigitsCNN",
    "DigitsMLP",
    "GRUSequence",
    "LMTransformer",
    "LeastSquares",
    "Logistic",
    "MLPClassifier",
    "MatrixCompletion",
    "Minibatcher",
    "ModuleProblem",
    "NoisyLabelMLP",
    "NormalizedCNN",
    "Problem",
    "Quadratic",
    "Quartic",
    "Rastrigin",
    "RecurrentTagger",
    "RegressionProblem",
    "ResidualMLP",
    "Rosenbrock",
    "Separable",
    "SequenceTransformer",
    "SparseLogistic",
    "Spec",
    "TransformerBlock",
    "TransformerClassifier",
    "TransformerLM",
    "VectorProblem",
    "WineSoftmax",
    "algorithmic_task",
    "load_digits_split",
    "load_standardised",
    "make_mlp",
    "markov_tokens",
    "memory_task",
    "sample_ackley",
    "sample_autoencoder",
    "sample_cancer_mlp",
    "sample_char_lm_text",
    "sample_char_rnn_text",
    "sample_cnn_wd",
    "sample_deep_linear",
    "sample_digits_cnn",
    "sample_digits_mlp",
    "sample_gru_seq",
    "sample_label_noise",
    "sample_least_squares",
    "sample_lm_transformer",
    "sample_logistic",
    "sample_lstm_lm",
    "sample_matrix_completion",
    "sample_mlp",
    "sample_quadratic",
    "sample_quartic",
    "sample_rastrigin",
    "sample_rnn_algorithmic",
    "sample_rosenbrock",
    "sample_separable",
    "sample_sparse_logistic",
    "sample_transformer_classifier",
    "sample_wine_softmax",
    "sequence_classes",
    "stdlib_text",
    "text_windows",
]
