"""Network families: cross-entropy of an ``nn.Module`` on fixed data, through autograd.

:class:`ModuleProblem` is their base; each family names a subclass and has a
``sample_<family>`` factory that builds the network (:mod:`.modules`) and its data
(:mod:`.datasets`). Next to small MLPs on synthetic and digits data there are models people
train (a transformer language model, recurrent nets, a CNN) and held-out ones that differ in
data and architecture.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .base import DataProblem, Spec, _draw, _seed, _tensor
from .datasets import (
    DIGITS_TRAIN_SIZE,
    load_digits_split,
    load_standardised,
    markov_tokens,
    memory_task,
)
from .modules import RecurrentTagger, ResidualMLP, TransformerLM, _fill_uniform_, _linear, make_mlp


class ModuleProblem(DataProblem):
    """Cross-entropy of an ``nn.Module`` on fixed data, times ``scale``, through autograd.

    The model maps a batch of inputs ``X[idx]`` to logits whose last dimension is the class
    dimension; targets ``y[idx]`` have the logits' shape without it. A classifier gives logits
    ``(batch, classes)``; a sequence model gives ``(batch, steps, classes)`` and is scored on
    every step (next-token prediction, per-step labels). Subclasses name the family and may
    add terms in :meth:`_objective`.
    """

    def __init__(
        self,
        model: nn.Module,
        X: Tensor,
        y: Tensor,
        scale: float = 1.0,
        batch_size: int | None = None,
        seed: int = 0,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(list(model.parameters()), X.shape[0], scale, batch_size, seed)
        self.model, self.X, self.y = model, X, y
        self.details = details or {}

    def _objective(self, X: Tensor, y: Tensor) -> Tensor:
        """The scaled objective on inputs ``X`` and targets ``y`` (a 0-dim tensor)."""
        logits = self.model(X)
        # flatten(0, -2) is a no-op view for (batch, classes) logits, so classifiers keep
        # exactly the values they had before sequence models shared this code.
        return nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten()) * self.scale

    def _loss_and_grad(self) -> tuple[float, int]:
        idx = self._next_batch()
        X = self.X if idx is None else self.X[idx]
        y = self.y if idx is None else self.y[idx]
        with torch.enable_grad():  # also works when the caller is inside torch.no_grad()
            value = self._objective(X, y)
        # autograd.grad + assignment overwrites p.grad rather than accumulating into it.
        grads = torch.autograd.grad(value, self.params)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        return value.item(), X.shape[0]

    def _loss(self) -> tuple[float, int]:
        return self._objective(self.X, self.y).item(), self.n

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), **self.details}


class RegressionProblem(ModuleProblem):
    """Mean squared error of an ``nn.Module`` (over examples and outputs), times ``scale``.

    The base of the regression families (an autoencoder, a deep linear network): the model's
    output has the shape of the targets ``y``.
    """

    def _objective(self, X: Tensor, y: Tensor) -> Tensor:
        error = self.model(X) - y
        return (error * error).mean() * self.scale


class MLPClassifier(ModuleProblem):
    """Cross-entropy of an MLP classifier on fixed synthetic data, times ``scale``."""

    name = "mlp"


class DigitsMLP(MLPClassifier):
    """MLP classifier on the training part of scikit-learn's 8x8 digits."""

    name = "digits_mlp"


class LMTransformer(ModuleProblem):
    """Next-token cross-entropy of a small causal transformer on synthetic Markov sequences."""

    name = "lm_transformer"


class GRUSequence(ModuleProblem):
    """Per-step cross-entropy of a GRU tagging sequences by a rule that needs memory."""

    name = "gru_seq"


class DigitsCNN(ModuleProblem):
    """Small CNN on the training part of scikit-learn's 8x8 digits."""

    name = "digits_cnn"


class CancerMLP(ModuleProblem):
    """Residual MLP with LayerNorm on scikit-learn's breast cancer data (2-class)."""

    name = "cancer_mlp"


class WineSoftmax(ModuleProblem):
    """Softmax regression on scikit-learn's wine data plus ``scale * l2 |W|^2 / 2``.

    The standardised classes are nearly separable: without the L2 term the loss would only
    approach 0 as the weights grow without bound, so the minimum is kept finite and positive.
    """

    name = "wine_softmax"

    def __init__(self, model: nn.Linear, X: Tensor, y: Tensor, l2: float = 1e-3, **kwargs: Any):
        super().__init__(model, X, y, **kwargs)
        self.l2 = float(l2)
        self._weight = model.weight  # the bias is not penalised

    def _objective(self, X: Tensor, y: Tensor) -> Tensor:
        weight = self._weight
        return super()._objective(X, y) + (0.5 * self.scale * self.l2) * (weight * weight).sum()

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "l2": self.l2}


class LSTMLM(ModuleProblem):
    """Next-token cross-entropy of an LSTM language model on synthetic Markov sequences."""

    name = "lstm_lm"


# --------------------------------------------------------------------------- factories


def sample_mlp(
    rng: np.random.Generator,
    features: Spec = (2, 10),
    hidden: Spec = (16, 32),
    layers: Spec = (1, 2),
    classes: Spec = (2, 5),
    n: Spec = (256, 1024),
    activation: Spec = "tanh",
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> MLPClassifier:
    """Student MLP on Gaussian inputs labelled by a random teacher MLP (argmax of its logits)."""
    f, h = _draw(rng, features, integer=True), _draw(rng, hidden, integer=True)
    depth, k = _draw(rng, layers, integer=True), _draw(rng, classes, integer=True)
    m, act = _draw(rng, n, integer=True), _draw(rng, activation)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    X = rng.standard_normal((m, f))
    # A wide-ish tanh teacher with larger weights gives curved, non-linear class boundaries.
    teacher_w1 = rng.standard_normal((f, 32)) * 2.0 / np.sqrt(f)
    teacher_w2 = rng.standard_normal((32, k))
    y = np.argmax(np.tanh(X @ teacher_w1) @ teacher_w2, axis=1)
    model = make_mlp([f] + [h] * depth + [k], act, rng, dtype)
    details = {"features": f, "hidden": h, "layers": depth, "classes": k, "activation": act}
    return MLPClassifier(
        model, _tensor(X, dtype), torch.as_tensor(y), s, bs, _seed(rng), details=details
    )


def sample_digits_mlp(
    rng: np.random.Generator,
    hidden: Spec = 32,
    activation: Spec = "tanh",
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> DigitsMLP:
    """64 -> hidden -> 10 MLP on the 1,200 digits training images; instances differ by init."""
    h, act = _draw(rng, hidden, integer=True), _draw(rng, activation)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    X, y, _, _ = load_digits_split()
    model = make_mlp([X.shape[1], h, 10], act, rng, dtype)
    details = {"hidden": h, "activation": act}
    return DigitsMLP(model, X.to(dtype), y, s, bs, _seed(rng), details=details)


def sample_lm_transformer(
    rng: np.random.Generator,
    d_model: Spec = (16, 32),
    layers: Spec = 1,
    heads: Spec = 2,
    context: Spec = 16,
    vocab: Spec = (16, 32),
    n: Spec = (64, 128),
    order: Spec = [1, 2],  # noqa: B006 (read only)
    branching: Spec = (2, 4),
    tied: Spec = [True, False],  # noqa: B006 (read only)
    mlp_ratio: Spec = 2,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> LMTransformer:
    """Causal transformer LM on ``n`` Markov sequences of ``context + 1`` tokens.

    ``d_model`` is rounded to a multiple of ``heads``. The model reads tokens ``0..context-1``
    of each sequence and predicts tokens ``1..context``.
    """
    h = _draw(rng, heads, integer=True)
    d = h * max(1, round(_draw(rng, d_model, integer=True) / h))
    depth, t = _draw(rng, layers, integer=True), _draw(rng, context, integer=True)
    v, m = _draw(rng, vocab, integer=True), _draw(rng, n, integer=True)
    k, b = _draw(rng, order, integer=True), _draw(rng, branching, integer=True)
    tie, ratio = bool(_draw(rng, tied)), _draw(rng, mlp_ratio, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    tokens = torch.as_tensor(markov_tokens(rng, m, t + 1, v, k, min(b, v)))
    model = TransformerLM(v, t, d, depth, h, ratio, tie, rng, dtype)
    details = {
        "d_model": d,
        "layers": depth,
        "heads": h,
        "context": t,
        "vocab": v,
        "order": k,
        "branching": b,
        "tied": tie,
    }
    return LMTransformer(model, tokens[:, :-1], tokens[:, 1:], s, bs, _seed(rng), details=details)


def sample_gru_seq(
    rng: np.random.Generator,
    hidden: Spec = (16, 32),
    features: Spec = (4, 8),
    length: Spec = 10,
    n: Spec = (64, 128),
    task: Spec = ["sum_sign", "first_marker"],  # noqa: B006 (read only)
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> GRUSequence:
    """One-layer GRU with a per-step linear head on a :func:`memory_task`."""
    h, f = _draw(rng, hidden, integer=True), _draw(rng, features, integer=True)
    t, m, name = _draw(rng, length, integer=True), _draw(rng, n, integer=True), _draw(rng, task)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    x, y, classes = memory_task(rng, name, m, t, f)
    model = RecurrentTagger(nn.GRU, f, h, classes, rng, dtype)
    details = {"hidden": h, "features": f, "length": t, "task": name, "classes": classes}
    return GRUSequence(
        model, _tensor(x, dtype), torch.as_tensor(y), s, bs, _seed(rng), details=details
    )


def sample_digits_cnn(
    rng: np.random.Generator,
    channels: Spec = (4, 8),
    conv_layers: Spec = (1, 2),
    n: Spec = (128, 256),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> DigitsCNN:
    """Conv 3x3 (same padding), ReLU, 2x2 max-pool, once or twice, then a linear head.

    Runs on ``n`` images drawn without replacement from the 1,200 digits training images
    (never the test part; all of them when ``n >= 1200``). The second conv layer, when there
    is one, has twice the channels.
    """
    c, depth = _draw(rng, channels, integer=True), _draw(rng, conv_layers, integer=True)
    m = min(_draw(rng, n, integer=True), DIGITS_TRAIN_SIZE)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    X, y, _, _ = load_digits_split()
    layers: list[nn.Module] = []
    size, fan_in = 8, 1
    for i in range(depth):
        out = c * 2**i
        conv = nn.utils.skip_init(nn.Conv2d, fan_in, out, 3, padding=1, dtype=dtype)
        _fill_uniform_(conv, rng, 1.0 / math.sqrt(9 * fan_in))  # torch's default bound
        layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
        size, fan_in = size // 2, out
    layers += [nn.Flatten(), _linear(fan_in * size * size, 10, rng, dtype)]
    details = {"channels": c, "conv_layers": depth}
    # A subset keeps a full-batch step cheap; sorted, so that all 1,200 keep their order.
    idx = torch.as_tensor(np.sort(rng.choice(DIGITS_TRAIN_SIZE, m, replace=False)))
    images = X[idx].to(dtype).reshape(m, 1, 8, 8)
    return DigitsCNN(nn.Sequential(*layers), images, y[idx], s, bs, _seed(rng), details=details)


def sample_cancer_mlp(
    rng: np.random.Generator,
    hidden: Spec = (16, 64),
    blocks: Spec = (1, 2),
    activation: Spec = ["tanh", "relu"],  # noqa: B006 (read only)
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> CancerMLP:
    """:class:`ResidualMLP` (2 classes) on the 569 breast cancer cases; instances differ by init."""
    h, depth = _draw(rng, hidden, integer=True), _draw(rng, blocks, integer=True)
    act = _draw(rng, activation)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    X, y = load_standardised("breast_cancer")
    model = ResidualMLP(X.shape[1], h, depth, 2, act, rng, dtype)
    details = {"hidden": h, "blocks": depth, "activation": act}
    return CancerMLP(model, X.to(dtype), y, s, bs, _seed(rng), details=details)


def sample_wine_softmax(
    rng: np.random.Generator,
    l2: Spec = 1e-3,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> WineSoftmax:
    """13 -> 3 softmax regression on the 178 wine samples; instances differ by init."""
    decay = _draw(rng, l2, log=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    X, y = load_standardised("wine")
    model = _linear(X.shape[1], 3, rng, dtype)
    return WineSoftmax(model, X.to(dtype), y, decay, scale=s, batch_size=bs, seed=_seed(rng))


def sample_lstm_lm(
    rng: np.random.Generator,
    hidden: Spec = (32, 64),
    embed: Spec = 16,
    context: Spec = 16,
    vocab: Spec = (32, 64),
    n: Spec = (96, 160),
    order: Spec = [1, 2],  # noqa: B006 (read only)
    branching: Spec = (2, 4),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> LSTMLM:
    """Embedding, one-layer LSTM and a linear head on the sequences of :func:`markov_tokens`."""
    h, e = _draw(rng, hidden, integer=True), _draw(rng, embed, integer=True)
    t, v = _draw(rng, context, integer=True), _draw(rng, vocab, integer=True)
    m = _draw(rng, n, integer=True)
    k, b = _draw(rng, order, integer=True), _draw(rng, branching, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    tokens = torch.as_tensor(markov_tokens(rng, m, t + 1, v, k, min(b, v)))
    model = RecurrentTagger(nn.LSTM, e, h, v, rng, dtype, vocab=v)
    details = {"hidden": h, "embed": e, "context": t, "vocab": v, "order": k, "branching": b}
    return LSTMLM(model, tokens[:, :-1], tokens[:, 1:], s, bs, _seed(rng), details=details)
