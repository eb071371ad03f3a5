"""Analytic test functions: quadratic, Rosenbrock, Rastrigin, Ackley and quartic.

Each is a :class:`~qlr.envs.problems.base.VectorProblem` with a hand-written gradient, shifted
so that its global minimum is 0, with its ``sample_<family>`` factory.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Spec, VectorProblem, _draw, _tensor


class Quadratic(VectorProblem):
    """``scale * 0.5 (x - x*)^T A (x - x*)`` with a symmetric positive definite ``A``."""

    name = "quadratic"

    def __init__(
        self, A: Tensor, x_star: Tensor, x0: Tensor, scale: float = 1.0, cond: float | None = None
    ):
        super().__init__(x0, scale)
        self.A, self.x_star = A, x_star
        self.cond = cond
        # f = |L r|^2 / 2 with A = L^T L (scale folded into L): a sum of squares cannot round
        # below zero, while r^T A r can for an ill-conditioned A; it costs one extra matvec.
        # (numpy's Cholesky: torch's MKL one is not bitwise reproducible from call to call.)
        lower = np.linalg.cholesky(A.double().numpy() * self.scale)
        self._L = torch.as_tensor(lower.T, dtype=A.dtype)

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        Lr = self._L @ (x - self.x_star)
        return 0.5 * Lr.dot(Lr), self._L.T @ Lr

    def _value(self, x: Tensor) -> Tensor:
        Lr = self._L @ (x - self.x_star)
        return 0.5 * Lr.dot(Lr)

    def _info(self) -> dict[str, Any]:
        return {"cond": self.cond}


class Rosenbrock(VectorProblem):
    """Generalised Rosenbrock ``sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2``, minimum 0 at ones."""

    name = "rosenbrock"

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # narrow/addcmul/in-place updates instead of slicing and temporaries: ~25% faster.
        n = x.numel() - 1
        head, tail = x.narrow(0, 0, n), x.narrow(0, 1, n)
        t = torch.addcmul(tail, head, head, value=-1.0)  # x[i+1] - x[i]^2
        u = 1.0 - head
        value = (100.0 * t.dot(t) + u.dot(u)) * self.scale
        grad = torch.zeros_like(x)
        grad.narrow(0, 0, n).addcmul_(head, t, value=-400.0).sub_(u, alpha=2.0)
        grad.narrow(0, 1, n).add_(t, alpha=200.0)
        return value, grad.mul_(self.scale)


class Rastrigin(VectorProblem):
    """Rastrigin ``10 d + sum(x^2 - 10 cos(2 pi x))``, minimum 0 at the origin."""

    name = "rastrigin"

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # 10 (1 - cos 2 pi x) = 20 sin^2(pi x): never negative in floating point, unlike the
        # textbook form that cancels 10 d against a sum of cosines.
        s = torch.sin(math.pi * x)
        value = (x * x + 20.0 * s * s).sum() * self.scale
        grad = (2.0 * x + (20.0 * math.pi) * torch.sin(2.0 * math.pi * x)).mul_(self.scale)
        return value, grad


class Ackley(VectorProblem):
    """Ackley ``-20 exp(-0.2 sqrt(mean x^2)) - exp(mean cos 2 pi x) + 20 + e``, minimum 0 at 0."""

    name = "ackley"

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        d = x.numel()
        r = torch.sqrt((x * x).mean())
        c = torch.cos(2.0 * math.pi * x).mean()
        # expm1 forms of 20 (1 - e^{-0.2 r}) and e (1 - e^{c - 1}): both terms are >= 0 because
        # r >= 0 and c <= 1, so the sum cannot round below zero near the optimum.
        value = (-20.0 * torch.expm1(-0.2 * r) - math.e * torch.expm1(c - 1.0)) * self.scale
        # d r / d x = x / (d r); at x = 0 the clamp turns 0/0 into 0/small = 0 instead of NaN
        # (sqrt(tiny) rather than tiny, whose reciprocal overflows float32).
        radial = (4.0 / d) * torch.exp(-0.2 * r) / r.clamp_min(math.sqrt(torch.finfo(x.dtype).tiny))
        wave = (2.0 * math.pi / d) * torch.exp(c)
        grad = (radial * x + wave * torch.sin(2.0 * math.pi * x)).mul_(self.scale)
        return value, grad


class Quartic(VectorProblem):
    """``sum a (x - c)^2 / 2 + b (x - c)^4 / 4``: curvature grows away from the minimum ``c``."""

    name = "quartic"

    def __init__(self, a: Tensor, b: Tensor, center: Tensor, x0: Tensor, scale: float = 1.0):
        super().__init__(x0, scale)
        self.a, self.b, self.center = a, b, center
        self._a, self._b = a * self.scale, b * self.scale  # scale folded in once

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = x - self.center
        u2 = u * u
        value = (u2 * (0.5 * self._a + 0.25 * self._b * u2)).sum()
        return value, u * (self._a + self._b * u2)


# --------------------------------------------------------------------------- factories


def sample_quadratic(
    rng: np.random.Generator,
    dim: Spec = (5, 50),
    cond: Spec = (1.0, 1e4),
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Quadratic:
    """Random rotation of eigenvalues log-spaced in [1/cond, 1]; x0 and x* standard normal."""
    d, k, s = _draw(rng, dim, integer=True), _draw(rng, cond, log=True), _draw(rng, scale, log=True)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q *= np.sign(np.diag(r))  # sign fix makes Q Haar-distributed
    eig = np.logspace(-np.log10(k), 0.0, d)
    A = (q * eig) @ q.T
    A = (A + A.T) / 2  # exact symmetry despite rounding
    x_star, x0 = rng.standard_normal(d), rng.standard_normal(d)
    return Quadratic(_tensor(A, dtype), _tensor(x_star, dtype), _tensor(x0, dtype), s, cond=k)


def sample_rosenbrock(
    rng: np.random.Generator,
    dim: Spec = (2, 10),
    noise: Spec = 0.2,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Rosenbrock:
    """x0 is (-1.2, 1, -1.2, 1, ...) plus Gaussian noise of std ``noise``."""
    d = max(2, _draw(rng, dim, integer=True))
    s, sd = _draw(rng, scale, log=True), _draw(rng, noise)
    x0 = np.where(np.arange(d) % 2 == 0, -1.2, 1.0) + sd * rng.standard_normal(d)
    return Rosenbrock(_tensor(x0, dtype), s)


def sample_rastrigin(
    rng: np.random.Generator,
    dim: Spec = (2, 10),
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Rastrigin:
    """x0 uniform in [-5.12, 5.12]^d."""
    d, s = _draw(rng, dim, integer=True), _draw(rng, scale, log=True)
    return Rastrigin(_tensor(rng.uniform(-5.12, 5.12, d), dtype), s)


def sample_ackley(
    rng: np.random.Generator,
    dim: Spec = (2, 10),
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Ackley:
    """x0 uniform in [-5, 5]^d."""
    d, s = _draw(rng, dim, integer=True), _draw(rng, scale, log=True)
    return Ackley(_tensor(rng.uniform(-5.0, 5.0, d), dtype), s)


def sample_quartic(
    rng: np.random.Generator,
    dim: Spec = (5, 30),
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Quartic:
    """a log-uniform in [0.1, 10], b in [0.01, 1]; x0 is 2-5 units from c in every coordinate."""
    d, s = _draw(rng, dim, integer=True), _draw(rng, scale, log=True)
    a = np.exp(rng.uniform(np.log(0.1), np.log(10.0), d))
    b = np.exp(rng.uniform(np.log(0.01), np.log(1.0), d))
    center = rng.standard_normal(d)
    x0 = center + rng.choice([-1.0, 1.0], d) * rng.uniform(2.0, 5.0, d)
    t = functools.partial(_tensor, dtype=dtype)
    return Quartic(t(a), t(b), t(center), t(x0), s)
