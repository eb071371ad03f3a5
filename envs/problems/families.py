"""The family table: every family's name and its ``sample_<family>`` factory, in a fixed order."""

from __future__ import annotations

from collections.abc import Callable

from .analytic import (
    sample_ackley,
    sample_quadratic,
    sample_quartic,
    sample_rastrigin,
    sample_rosenbrock,
)
from .base import Problem
from .factorization import sample_deep_linear, sample_matrix_completion
from .feedforward import sample_autoencoder, sample_cnn_wd, sample_label_noise
from .linear import (
    sample_least_squares,
    sample_logistic,
    sample_separable,
    sample_sparse_logistic,
)
from .networks import (
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
    sample_char_lm_text,
    sample_char_rnn_text,
    sample_rnn_algorithmic,
    sample_transformer_classifier,
)

FAMILIES: dict[str, Callable[..., Problem]] = {
    "quadratic": sample_quadratic,
    "rosenbrock": sample_rosenbrock,
    "rastrigin": sample_rastrigin,
    "ackley": sample_ackley,
    "quartic": sample_quartic,
    "least_squares": sample_least_squares,
    "logistic": sample_logistic,
    "mlp": sample_mlp,
    "digits_mlp": sample_digits_mlp,
    "lm_transformer": sample_lm_transformer,
    "gru_seq": sample_gru_seq,
    "digits_cnn": sample_digits_cnn,
    "cancer_mlp": sample_cancer_mlp,
    "wine_softmax": sample_wine_softmax,
    "lstm_lm": sample_lstm_lm,
    # families of the held-out folds protocol (qlr.envs.distributions.FOLDS), in no named split
    "cnn_wd": sample_cnn_wd,
    "autoencoder": sample_autoencoder,
    "matrix_completion": sample_matrix_completion,
    "deep_linear": sample_deep_linear,
    "rnn_algorithmic": sample_rnn_algorithmic,
    "transformer_classifier": sample_transformer_classifier,
    "char_lm_text": sample_char_lm_text,
    "char_rnn_text": sample_char_rnn_text,
    "sparse_logistic": sample_sparse_logistic,
    "separable": sample_separable,
    "label_noise": sample_label_noise,
}
"""Family name -> ``sample(rng, **ranges) -> Problem``."""
