"""The data the network families train on: scikit-learn's bundled sets and synthetic tasks.

:func:`load_digits_split` and :func:`load_standardised` load and standardise scikit-learn data
sets once per process; :func:`markov_tokens` and :func:`memory_task` synthesise sequences from
a numpy generator.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

DIGITS_TRAIN_SIZE = 1200


@functools.lru_cache(maxsize=1)
def load_digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits as ``(X_train, y_train, X_test, y_test)`` float32/int64 tensors.

    The first 1,200 images are the training part, the remaining 597 the test part. Features
    are standardised with training statistics (constant pixels are only centred). Loaded once
    per process; treat the returned tensors as read-only.
    """
    from sklearn.datasets import load_digits  # lazy: scikit-learn is an optional dependency

    data = load_digits()
    X, y = data.data.astype(np.float64), data.target.astype(np.int64)
    train = slice(0, DIGITS_TRAIN_SIZE)
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    X = (X - mean) / np.where(std > 0, std, 1.0)
    X_t, y_t = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    n = DIGITS_TRAIN_SIZE
    return X_t[:n], y_t[:n], X_t[n:], y_t[n:]


def markov_tokens(
    rng: np.random.Generator, n: int, length: int, vocab: int, order: int, branching: int
) -> np.ndarray:
    """``n`` token sequences from a random sparse Markov chain of the given order.

    Each context (the previous ``order`` tokens) allows ``branching`` successors with
    Dirichlet(1) probabilities; the first ``order`` tokens are uniform. A model that learns
    the chain reaches a per-token loss near its entropy, well below ``log(vocab)``.

    Returns:
        An int64 array of shape ``(n, length)``.
    """
    if not 1 <= branching <= vocab:
        raise ValueError(f"branching must lie in [1, vocab={vocab}], got {branching}")
    contexts = vocab**order
    successors = np.argsort(rng.random((contexts, vocab)), axis=1)[:, :branching]
    cumulative = np.cumsum(rng.dirichlet(np.ones(branching), size=contexts), axis=1)
    seq = np.empty((n, length), dtype=np.int64)
    seq[:, :order] = rng.integers(vocab, size=(n, min(order, length)))
    for t in range(order, length):
        context = np.zeros(n, dtype=np.int64)
        for j in range(order):
            context = context * vocab + seq[:, t - order + j]
        pick = (rng.random(n)[:, None] > cumulative[context]).sum(axis=1)
        seq[:, t] = successors[context, np.minimum(pick, branching - 1)]  # rounding at 1.0
    return seq


def memory_task(
    rng: np.random.Generator, task: str, n: int, length: int, features: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Inputs ``(n, length, features)``, per-step labels ``(n, length)`` and the class count.

    * ``"sum_sign"``: Gaussian inputs; the label at step t is whether the running sum of a
      random projection of the inputs up to t is positive.
    * ``"first_marker"``: one-hot tokens, two of which are rare markers; the label at step t
      is 0 before any marker, else 1 or 2 for the marker that came first.

    Both labels depend on the whole prefix, so a model must carry state from step to step.
    """
    if task == "sum_sign":
        x = rng.standard_normal((n, length, features))
        y = (np.cumsum(x @ rng.standard_normal(features), axis=1) > 0).astype(np.int64)
        return x, y, 2
    if task == "first_marker":
        if features < 3:
            raise ValueError(f"first_marker needs features >= 3, got {features}")
        marker = 1.0 / length  # no marker by the end in about e^-2 of the sequences
        p = np.full(features, (1.0 - 2 * marker) / (features - 2))
        p[:2] = marker
        tokens = rng.choice(features, size=(n, length), p=p)
        first = [np.where((tokens == m).any(1), (tokens == m).argmax(1), length) for m in (0, 1)]
        steps = np.arange(length)[None, :]
        earliest = np.minimum(first[0], first[1])[:, None]
        y = np.where(steps < earliest, 0, np.where(first[0] < first[1], 1, 2)[:, None])
        return np.eye(features)[tokens], y.astype(np.int64), 3
    raise ValueError(f"unknown task {task!r}; valid: ['first_marker', 'sum_sign']")


@functools.cache
def load_standardised(name: str) -> tuple[Tensor, Tensor]:
    """A scikit-learn bundled data set (``"breast_cancer"`` or ``"wine"``), standardised.

    Returns ``(X, y)`` as float32/int64 tensors, features centred and scaled to unit
    variance over the whole set. Loaded once per process; treat the tensors as read-only.
    """
    from sklearn import datasets  # lazy: scikit-learn is an optional dependency

    loaders = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}; valid: {sorted(loaders)}")
    data = loaders[name]()
    X = data.data.astype(np.float64)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(data.target.astype(np.int64))
