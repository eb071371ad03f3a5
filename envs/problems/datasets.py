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


ALGORITHMIC_TASKS = ("copy", "parity", "addition")
"""The tasks :func:`algorithmic_task` builds."""

IGNORE = -100
"""Target of a step that is not scored (``cross_entropy``'s default ``ignore_index``)."""


def algorithmic_task(
    rng: np.random.Generator, task: str, n: int, length: int, symbols: int = 4
) -> tuple[np.ndarray, np.ndarray, int]:
    """One-hot inputs ``(n, steps, features)``, per-step targets ``(n, steps)``, class count.

    * ``"copy"``: ``length`` symbols from an alphabet of ``symbols``, a delimiter, then
      ``length`` blank steps on which the symbols must be recalled in order
      (``steps = 2 length + 1``); the first ``length + 1`` steps are not scored.
    * ``"parity"``: random bits; the target at step t is the parity of bits 0..t.
    * ``"addition"``: two binary numbers fed least significant bit first, one pair of bits a
      step (a one-hot of the 4 pairs); the target is the bit of the sum at that step, which
      depends on the carry from the steps before.

    Unscored steps have the target :data:`IGNORE`. Every sequence scores the same steps, so a
    minibatch mean is an unbiased estimate of the full mean.
    """
    if task == "copy":
        if symbols < 2:
            raise ValueError(f"copy needs symbols >= 2, got {symbols}")
        seq = rng.integers(symbols, size=(n, length))
        blank, delimiter = symbols, symbols + 1
        tokens = np.full((n, 2 * length + 1), blank, dtype=np.int64)
        tokens[:, :length] = seq
        tokens[:, length] = delimiter
        y = np.full(tokens.shape, IGNORE, dtype=np.int64)
        y[:, length + 1 :] = seq
        return np.eye(symbols + 2)[tokens], y, symbols
    if task == "parity":
        bits = rng.integers(2, size=(n, length))
        return np.eye(2)[bits], np.cumsum(bits, axis=1) % 2, 2
    if task == "addition":
        a, b = rng.integers(2, size=(n, length)), rng.integers(2, size=(n, length))
        y = np.empty((n, length), dtype=np.int64)
        carry = np.zeros(n, dtype=np.int64)
        for t in range(length):
            total = a[:, t] + b[:, t] + carry
            y[:, t], carry = total % 2, total // 2
        return np.eye(4)[2 * a + b], y, 2
    raise ValueError(f"unknown task {task!r}; valid: {sorted(ALGORITHMIC_TASKS)}")


CLASSIFICATION_TASKS = ("majority", "order")
"""The tasks :func:`sequence_classes` builds."""


def sequence_classes(
    rng: np.random.Generator, task: str, n: int, length: int, vocab: int, classes: int = 3
) -> tuple[np.ndarray, np.ndarray, int]:
    """Token sequences ``(n, length)`` with one label each ``(n,)``, and the class count.

    * ``"majority"``: tokens ``0..classes-1`` are class tokens, the others filler. About half
      the steps hold a class token, the label's own at three times the others' rate; the label
      is the class token that occurs most often (ties go to the lowest), so it is read from
      the content, wherever it is.
    * ``"order"``: tokens 0 and 1 each occur exactly once, at random steps, among filler
      tokens; the label is 1 when token 0 comes first. It is read from positions: the two
      sequences of a swapped pair hold the same tokens and opposite labels.
    """
    if task == "majority":
        if not 2 <= classes < vocab:
            raise ValueError(f"majority needs 2 <= classes < vocab={vocab}, got {classes}")
        favoured = rng.integers(classes, size=n)
        weights = np.ones((n, classes))
        weights[np.arange(n), favoured] = 3.0
        cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        pick = (rng.random((n, length, 1)) > cumulative[:, None, :]).sum(axis=2)
        filler = rng.integers(classes, vocab, size=(n, length))
        tokens = np.where(rng.random((n, length)) < 0.5, np.minimum(pick, classes - 1), filler)
        counts = (tokens[:, :, None] == np.arange(classes)).sum(axis=1)
        return tokens, counts.argmax(axis=1), classes
    if task == "order":
        if vocab < 3 or length < 2:
            raise ValueError(f"order needs vocab >= 3 and length >= 2, got {vocab}, {length}")
        tokens = rng.integers(2, vocab, size=(n, length))
        places = np.argsort(rng.random((n, length)), axis=1)[:, :2]
        rows = np.arange(n)
        tokens[rows, places[:, 0]], tokens[rows, places[:, 1]] = 0, 1
        return tokens, (places[:, 0] < places[:, 1]).astype(np.int64), 2
    raise ValueError(f"unknown task {task!r}; valid: {sorted(CLASSIFICATION_TASKS)}")


# A fixed list of small, long-stable modules of the standard library: real English prose
# (docstrings, comments) mixed with code, about 80,000 characters. The text is the running
# Python's own, so it is the same on every machine with the same Python version.
STDLIB_TEXT_FILES: tuple[str, ...] = (
    "colorsys.py",
    "bisect.py",
    "fnmatch.py",
    "sched.py",
    "graphlib.py",
    "queue.py",
    "textwrap.py",
    "heapq.py",
)

# Newline, then printable ASCII (space to tilde); anything else (tabs, non-ASCII) is one more
# "other" character, so the vocabulary does not depend on the text.
CHAR_VOCAB = 2 + (ord("~") - ord(" ") + 1)


@functools.cache
def stdlib_text() -> np.ndarray:
    """The characters of :data:`STDLIB_TEXT_FILES`, concatenated, as int64 ids.

    Newline is 0, printable ASCII ``" "``..``"~"`` are 1..95, anything else 96
    (:data:`CHAR_VOCAB` ids in all). Read once per process; treat as read-only.

    Raises:
        FileNotFoundError: the standard library's source is not installed.
    """
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in STDLIB_TEXT_FILES:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the text families need the stdlib source")
        parts.append(path.read_text(encoding="utf-8"))
    codes = np.frombuffer("\n".join(parts).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = codes - ord(" ") + 1
    ids[(codes < ord(" ")) | (codes > ord("~"))] = CHAR_VOCAB - 1
    ids[codes == ord("\n")] = 0
    return ids


def text_windows(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """``n`` windows of ``length`` consecutive characters of :func:`stdlib_text` (int64 ids).

    Start offsets are uniform over the text, so instances draw different (overlapping) passages.
    """
    text = stdlib_text()
    if not 1 <= length <= text.size:
        raise ValueError(f"length must lie in [1, {text.size}], got {length}")
    starts = rng.integers(text.size - length + 1, size=n)
    return text[starts[:, None] + np.arange(length)[None, :]]
