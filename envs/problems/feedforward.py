"""Feed-forward networks people train, on scikit-learn's bundled data sets.

* ``cnn_wd``: a CNN with a normalisation layer after every convolution, on digits images; made
  for SGD with momentum and weight decay, where the normalised convolutions are scale-invariant
  and weight decay, by shrinking them, keeps raising their effective learning rate;
* ``autoencoder``: an MLP autoencoder through a narrow code, on digits or breast-cancer
  features (mean squared reconstruction error, a floor well above zero);
* ``label_noise``: an MLP classifier on digits with a share of the labels replaced by other
  classes: the loss falls fast to the level of the noise, then slowly as the net memorises.

Each is a :class:`~qlr.envs.problems.networks.ModuleProblem` with its ``sample_<family>``
factory; instances draw their images (a subset of the 1,200 digits training images, never the
test part) and their init from the generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .base import Spec, _draw, _seed
from .datasets import DIGITS_TRAIN_SIZE, load_digits_split, load_standardised
from .modules import _fill_uniform_, _linear, make_mlp
from .networks import ModuleProblem, RegressionProblem

NORMS = ("batch", "group")
"""Normalisation layers of ``cnn_wd``."""


class NormalizedCNN(ModuleProblem):
    """CNN with BatchNorm or GroupNorm after every convolution, on digits images.

    BatchNorm keeps no running statistics (``track_running_stats=False``): it normalises with
    the statistics of the batch it is given in every mode, so :meth:`loss` is the full-batch
    objective, deterministic, and the module holds no state besides its parameters. Its
    minibatch gradients are those of the minibatch objective, as in any BatchNorm training;
    GroupNorm's are unbiased estimates of the full gradient.
    """

    name = "cnn_wd"


class Autoencoder(RegressionProblem):
    """MLP autoencoder ``features -> hidden -> bottleneck -> hidden -> features``, MSE."""

    name = "autoencoder"


class NoisyLabelMLP(ModuleProblem):
    """MLP classifier on digits with a share of its labels flipped to other classes."""

    name = "label_noise"


def _digits_subset(rng: np.random.Generator, n: int) -> tuple[Tensor, Tensor]:
    """``n`` digits training images (all 1,200 when ``n >= 1200``), in their original order."""
    X, y, _, _ = load_digits_split()
    m = min(n, DIGITS_TRAIN_SIZE)
    idx = torch.as_tensor(np.sort(rng.choice(DIGITS_TRAIN_SIZE, m, replace=False)))
    return X[idx], y[idx]


def _norm(kind: str, channels: int, dtype: torch.dtype) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False, dtype=dtype)
    if kind == "group":
        # groups of up to 4 channels' worth: 1-4 groups for the widths drawn here
        return nn.GroupNorm(math.gcd(channels, 4), channels, dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}; valid: {list(NORMS)}")


def sample_cnn_wd(
    rng: np.random.Generator,
    channels: Spec = (4, 8),
    conv_layers: Spec = (1, 2),
    norm: Spec = ["batch", "group"],  # noqa: B006 (read only)
    n: Spec = (128, 192),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> NormalizedCNN:
    """Conv 3x3 (same padding, no bias), norm, ReLU, 2x2 max-pool, once or twice; linear head.

    The second conv layer, when there is one, has twice the channels. The bias is left out of
    the convolutions because the norm's own shift replaces it, as in common CNN recipes.
    Meant for ``momentum_wd`` (SGD, momentum 0.9, weight decay 5e-4).
    """
    c, depth = _draw(rng, channels, integer=True), _draw(rng, conv_layers, integer=True)
    kind, m = _draw(rng, norm), _draw(rng, n, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    X, y = _digits_subset(rng, m)
    layers: list[nn.Module] = []
    size, fan_in = 8, 1
    for i in range(depth):
        out = c * 2**i
        conv = nn.utils.skip_init(nn.Conv2d, fan_in, out, 3, padding=1, bias=False, dtype=dtype)
        _fill_uniform_(conv, rng, 1.0 / math.sqrt(9 * fan_in))  # torch's default bound
        layers += [conv, _norm(kind, out, dtype), nn.ReLU(), nn.MaxPool2d(2)]
        size, fan_in = size // 2, out
    layers += [nn.Flatten(), _linear(fan_in * size * size, 10, rng, dtype)]
    details = {"channels": c, "conv_layers": depth, "norm": kind}
    images = X.to(dtype).reshape(-1, 1, 8, 8)
    return NormalizedCNN(nn.Sequential(*layers), images, y, s, bs, _seed(rng), details=details)


def sample_autoencoder(
    rng: np.random.Generator,
    data: Spec = ["digits", "breast_cancer"],  # noqa: B006 (read only)
    hidden: Spec = (32, 64),
    bottleneck: Spec = (4, 8),
    activation: Spec = ["tanh", "relu"],  # noqa: B006 (read only)
    n: Spec = (256, 512),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Autoencoder:
    """Autoencoder on ``n`` standardised digits images (64 pixels) or breast-cancer cases (30).

    The breast cancer data hold 569 cases: ``n`` above that takes them all. The code layer has
    the activation too, the output layer none. Meant for AdamW.
    """
    source, h = _draw(rng, data), _draw(rng, hidden, integer=True)
    b, act = _draw(rng, bottleneck, integer=True), _draw(rng, activation)
    m = _draw(rng, n, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    if source == "digits":
        X = _digits_subset(rng, m)[0]
    elif source == "breast_cancer":
        full = load_standardised("breast_cancer")[0]
        k = min(m, full.shape[0])
        X = full[torch.as_tensor(np.sort(rng.choice(full.shape[0], k, replace=False)))]
    else:
        raise ValueError(f"unknown data {source!r}; valid: ['breast_cancer', 'digits']")
    f = X.shape[1]
    model = make_mlp([f, h, b, h, f], act, rng, dtype)
    details = {"data": source, "hidden": h, "bottleneck": b, "activation": act}
    X = X.to(dtype)
    return Autoencoder(model, X, X, s, bs, _seed(rng), details=details)


def sample_label_noise(
    rng: np.random.Generator,
    hidden: Spec = (16, 32),
    noise: Spec = (0.2, 0.4),
    activation: Spec = ["tanh", "relu"],  # noqa: B006 (read only)
    n: Spec = (512, 1024),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> NoisyLabelMLP:
    """64 -> hidden -> hidden -> 10 MLP on ``n`` digits images, a share ``noise`` mislabelled.

    Each image's label is replaced, with probability ``noise``, by one of the 9 other classes
    drawn uniformly (symmetric label noise); the share actually flipped is in ``info()``. At a
    good rate the loss first falls to about the noise's entropy (1.0-1.6 nats), then keeps
    falling as the net memorises the flipped labels.
    """
    h, rate = _draw(rng, hidden, integer=True), _draw(rng, noise)
    act, m = _draw(rng, activation), _draw(rng, n, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    X, y = _digits_subset(rng, m)
    flip = rng.random(X.shape[0]) < rate
    shift = rng.integers(1, 10, size=X.shape[0])
    labels = torch.as_tensor(np.where(flip, (y.numpy() + shift) % 10, y.numpy()))
    model = make_mlp([X.shape[1], h, h, 10], act, rng, dtype)
    details = {"hidden": h, "activation": act, "noise": float(flip.mean())}
    return NoisyLabelMLP(model, X.to(dtype), labels, s, bs, _seed(rng), details=details)
