"""Linear models on synthetic data: least squares and logistic regression.

All compute their gradients by hand (no autograd graph) and draw minibatches through
:class:`~qlr.envs.problems.base.DataProblem`; each comes with its ``sample_<family>`` factory.
Next to plain logistic regression there are two variants people meet in practice: sparse
high-dimensional bag-of-features inputs (``sparse_logistic``, the setting AdaGrad was made for)
and linearly separable data (``separable``, where the loss keeps falling toward zero).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .base import DataProblem, Spec, _draw, _seed, _tensor


class LeastSquares(DataProblem):
    """Linear least squares ``scale * mean((X w - y)^2) / 2`` on synthetic data.

    In full-batch mode the optimum value ``f*`` is subtracted, so the minimum is 0. It is
    evaluated as ``|X (w - w*)|^2 / 2n``, which equals ``mean((X w - y)^2) / 2 - f*`` exactly
    (the optimal residual is orthogonal to the columns of X) but cannot round below zero.

    In minibatch mode nothing is subtracted from either :meth:`loss_and_grad` or :meth:`loss`:
    a minibatch estimate of the shifted objective can be negative near the optimum, which would
    break log-ratio rewards. ``info()["min_loss"]`` gives the minimum of :meth:`loss` in both
    modes.
    """

    name = "least_squares"

    def __init__(
        self,
        X: Tensor,
        y: Tensor,
        w0: Tensor,
        scale: float = 1.0,
        batch_size: int | None = None,
        seed: int = 0,
        noise: float | None = None,
    ):
        w = w0.detach().clone().requires_grad_(True)
        super().__init__([w], X.shape[0], scale, batch_size, seed)
        self.X, self.y, self.noise = X, y, noise
        # numpy rather than torch.linalg.lstsq: torch's MKL solver varies in the last bits from
        # call to call, and the optimum must be identical for identical generator states.
        X64, y64 = X.double().numpy(), y.double().numpy()
        w_star = np.linalg.lstsq(X64, y64, rcond=None)[0]
        self.f_star = float(np.mean((X64 @ w_star - y64) ** 2) / 2)
        self.w_star = torch.as_tensor(w_star, dtype=X.dtype)

    def _shifted(self, w: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        e = self.X @ (w - self.w_star)
        c = self.scale / self.n
        value = 0.5 * c * e.dot(e)
        return value, (self.X.T @ e).mul_(c) if need_grad else None

    def _raw(self, w: Tensor, idx: Tensor | None, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        X = self.X if idx is None else self.X[idx]
        y = self.y if idx is None else self.y[idx]
        r = X @ w - y
        c = self.scale / X.shape[0]
        value = 0.5 * c * r.dot(r)
        return value, (X.T @ r).mul_(c) if need_grad else None

    def _loss_and_grad(self) -> tuple[float, int]:
        w = self.params[0].detach()
        idx = self._next_batch()
        if idx is None:
            value, grad = self._shifted(w, True)
        else:
            value, grad = self._raw(w, idx, True)
        self.params[0].grad = grad
        return value.item(), self.n if idx is None else idx.numel()

    def _loss(self) -> tuple[float, int]:
        w = self.params[0].detach()
        value = self._raw(w, None, False)[0] if self.stochastic else self._shifted(w, False)[0]
        return value.item(), self.n

    def _info(self) -> dict[str, Any]:
        min_loss = self.scale * self.f_star if self.stochastic else 0.0
        return {**super()._info(), "noise": self.noise, "min_loss": min_loss}


class Logistic(DataProblem):
    """Binary logistic regression ``scale * (mean log(1 + exp(-s x.w)) + l2 |w|^2 / 2)``.

    Labels ``s`` are +-1. The small L2 term keeps the minimum finite; the minimum is unknown
    and not subtracted, but the objective is positive.
    """

    name = "logistic"

    def __init__(
        self,
        X: Tensor,
        labels: Tensor,
        w0: Tensor,
        l2: float = 1e-3,
        scale: float = 1.0,
        batch_size: int | None = None,
        seed: int = 0,
        label_noise: float | None = None,
    ):
        w = w0.detach().clone().requires_grad_(True)
        super().__init__([w], X.shape[0], scale, batch_size, seed)
        self.X, self.labels = X, labels
        # Signed features s_i x_i turn the margin into one matrix-vector product.
        self._signed_X = X * labels.unsqueeze(1)
        self.l2 = l2
        self.label_noise = label_noise

    def _eval(self, w: Tensor, idx: Tensor | None, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        SX = self._signed_X if idx is None else self._signed_X[idx]
        margin = SX @ w
        c = self.scale / SX.shape[0]
        value = c * nn.functional.softplus(-margin).sum() + (0.5 * self.scale * self.l2) * w.dot(w)
        if not need_grad:
            return value, None
        # d softplus(-m) / dm = -sigmoid(-m)
        grad = (SX.T @ torch.sigmoid(-margin)).mul_(-c).add_(w, alpha=self.scale * self.l2)
        return value, grad

    def _loss_and_grad(self) -> tuple[float, int]:
        w = self.params[0].detach()
        idx = self._next_batch()
        value, grad = self._eval(w, idx, True)
        self.params[0].grad = grad
        return value.item(), self.n if idx is None else idx.numel()

    def _loss(self) -> tuple[float, int]:
        return self._eval(self.params[0].detach(), None, False)[0].item(), self.n

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "l2": self.l2, "label_noise": self.label_noise}


class SparseLogistic(Logistic):
    """:class:`Logistic` on sparse bag-of-features rows (a few per cent of the entries non-zero).

    Feature frequencies follow a Zipf law, as words do: a few features occur in many rows,
    most in a handful, so most coordinates see a gradient only now and then.
    """

    name = "sparse_logistic"

    def __init__(self, *args: Any, density: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.density = float(density)

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "density": self.density}


class Separable(Logistic):
    """:class:`Logistic` on linearly separable data, with at least ``gap`` between the classes.

    The loss has no minimum at finite weights without the L2 term; the default ``l2`` (1e-7)
    is only there to keep it finite and positive in float32, so over a run's few hundred steps
    the loss falls toward zero, faster the larger the steps, as on any separable problem.
    """

    name = "separable"

    def __init__(self, *args: Any, gap: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gap = float(gap)

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "gap": self.gap}


# --------------------------------------------------------------------------- factories


def _column_scales(rng: np.random.Generator, dim: int, spread: float) -> np.ndarray:
    """Per-feature scales log-uniform in [1/spread, spread]: makes the data ill-conditioned."""
    return np.exp(rng.uniform(-np.log(spread), np.log(spread), size=dim))


def sample_least_squares(
    rng: np.random.Generator,
    dim: Spec = (5, 30),
    n: Spec = (100, 500),
    noise: Spec = (0.01, 1.0),
    spread: float = 10.0,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> LeastSquares:
    """Gaussian X with feature scales in [1/spread, spread], y = X w* + noise; w0 = 0.

    ``n`` is raised to at least ``2 * dim`` so the problem stays overdetermined.
    """
    d = _draw(rng, dim, integer=True)
    m = max(_draw(rng, n, integer=True), 2 * d)
    sd, s = _draw(rng, noise, log=True), _draw(rng, scale, log=True)
    X = rng.standard_normal((m, d)) * _column_scales(rng, d, spread)
    w_true = rng.standard_normal(d)
    y = X @ w_true + sd * rng.standard_normal(m)
    bs = _draw(rng, batch_size, integer=True)
    t = functools.partial(_tensor, dtype=dtype)
    return LeastSquares(t(X), t(y), t(np.zeros(d)), s, bs, _seed(rng), noise=sd)


def sample_logistic(
    rng: np.random.Generator,
    dim: Spec = (5, 30),
    n: Spec = (200, 1000),
    label_noise: Spec = (0.0, 0.2),
    l2: float = 1e-3,
    spread: float = 3.0,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Logistic:
    """Labels sign(x.w_true) with margins of std 3, each flipped with prob ``label_noise``."""
    d, m = _draw(rng, dim, integer=True), _draw(rng, n, integer=True)
    flip, s = _draw(rng, label_noise), _draw(rng, scale, log=True)
    X = rng.standard_normal((m, d)) * _column_scales(rng, d, spread)
    margin = X @ rng.standard_normal(d)
    margin *= 3.0 / (margin.std() + 1e-12)
    labels = np.where(margin > 0, 1.0, -1.0) * np.where(rng.random(m) < flip, -1.0, 1.0)
    w0 = 0.1 * rng.standard_normal(d)
    bs = _draw(rng, batch_size, integer=True)
    t = functools.partial(_tensor, dtype=dtype)
    return Logistic(t(X), t(labels), t(w0), l2, s, bs, _seed(rng), label_noise=flip)


def sample_sparse_logistic(
    rng: np.random.Generator,
    dim: Spec = (256, 1024),
    n: Spec = (256, 768),
    density: Spec = (0.01, 0.05),
    label_noise: Spec = (0.0, 0.1),
    l2: float = 1e-4,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> SparseLogistic:
    """Binary bag-of-features rows (1 where a feature is present), ``density`` of them present.

    Feature j (in a random order) is present in a row with probability proportional to
    ``1 / (j + 1)`` (capped at 0.5), scaled so that the mean share of present features is
    ``density``; a row with none gets one. Labels are the sign of ``x.w_true`` for a Gaussian
    ``w_true``, each flipped with probability ``label_noise``; ``w0 = 0``. ``l2`` keeps the
    minimum finite when ``dim > n`` makes the data separable. The curvature along a feature
    grows with its frequency, so one rate for all of them is slow on the rare ones: at default
    sizes AdaGrad reaches its best 300-step loss from any rate in 0.3-3, where plain SGD needs
    one of 10-30.
    """
    d, m = _draw(rng, dim, integer=True), _draw(rng, n, integer=True)
    rho, flip = _draw(rng, density, log=True), _draw(rng, label_noise)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    zipf = 1.0 / np.arange(1, d + 1)
    p = np.minimum(zipf * (rho * d / zipf.sum()), 0.5)
    present = rng.random((m, d)) < p[rng.permutation(d)]  # frequent features anywhere
    empty = ~present.any(axis=1)
    present[empty, rng.integers(d, size=int(empty.sum()))] = True  # no all-zero row
    X = present.astype(np.float64)
    margin = X @ rng.standard_normal(d)
    labels = np.where(margin > 0, 1.0, -1.0) * np.where(rng.random(m) < flip, -1.0, 1.0)
    t = functools.partial(_tensor, dtype=dtype)
    return SparseLogistic(
        t(X),
        t(labels),
        t(np.zeros(d)),
        l2,
        s,
        bs,
        _seed(rng),
        label_noise=flip,
        density=float(present.mean()),
    )


def sample_separable(
    rng: np.random.Generator,
    dim: Spec = (10, 30),
    n: Spec = (200, 500),
    gap: Spec = (0.1, 1.0),
    l2: float = 1e-7,
    spread: float = 3.0,
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Separable:
    """Gaussian X (feature scales in [1/spread, spread]) labelled by a random hyperplane.

    Every point is moved ``gap`` away from the hyperplane along its normal, so the classes are
    separated by at least ``2 gap``; ``w0`` is small and random.
    """
    d, m = _draw(rng, dim, integer=True), _draw(rng, n, integer=True)
    g, s = _draw(rng, gap, log=True), _draw(rng, scale, log=True)
    X = rng.standard_normal((m, d)) * _column_scales(rng, d, spread)
    normal = rng.standard_normal(d)
    normal /= np.linalg.norm(normal)
    side = np.where(X @ normal > 0, 1.0, -1.0)
    X += g * side[:, None] * normal[None, :]
    w0 = 0.1 * rng.standard_normal(d)
    bs = _draw(rng, batch_size, integer=True)
    t = functools.partial(_tensor, dtype=dtype)
    return Separable(t(X), t(side), t(w0), l2, s, bs, _seed(rng), label_noise=0.0, gap=g)
