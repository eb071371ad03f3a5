"""Linear models on synthetic data: least squares and logistic regression.

Both compute their gradients by hand (no autograd graph) and draw minibatches through
:class:`~qlr.envs.problems.base.DataProblem`; each comes with its ``sample_<family>`` factory.
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
