"""Products of matrices fitted by gradient descent: matrix completion and deep linear networks.

Both are non-convex for the simplest of reasons, a product of factors: the loss is a
polynomial in the parameters, flat near a small start (a saddle at zero) and steep far from it,
so the step that is safe shrinks as the factors grow.

* ``matrix_completion``: ``U V^T`` fitted to the observed entries of a low-rank matrix, by
  hand-written gradients over the list of observed entries (minibatches draw entries);
* ``deep_linear``: a chain of 4-8 weight matrices with no activation between them, fitted to a
  linear map. Its loss is of degree ``2 * depth`` in the weights: at a high rate under
  momentum one step can take it from finite to overflow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .base import DataProblem, Spec, _draw, _seed, _tensor
from .modules import _fill_
from .networks import RegressionProblem


class MatrixCompletion(DataProblem):
    """``scale * mean over observed (i, j) of (U_i . V_j - M_ij)^2 / 2``.

    The data are the observed entries: row and column indices and values. Without noise the
    minimum is 0 (the true factors fit every entry).
    """

    name = "matrix_completion"

    def __init__(
        self,
        U: Tensor,
        V: Tensor,
        rows: Tensor,
        cols: Tensor,
        values: Tensor,
        scale: float = 1.0,
        batch_size: int | None = None,
        seed: int = 0,
        details: dict[str, Any] | None = None,
    ):
        params = [U.detach().clone().requires_grad_(True), V.detach().clone().requires_grad_(True)]
        super().__init__(params, rows.numel(), scale, batch_size, seed)
        self.rows, self.cols, self.values = rows, cols, values
        self.details = details or {}

    def _eval(self, idx: Tensor | None, need_grad: bool) -> tuple[Tensor, list[Tensor] | None]:
        U, V = (p.detach() for p in self.params)
        rows = self.rows if idx is None else self.rows[idx]
        cols = self.cols if idx is None else self.cols[idx]
        values = self.values if idx is None else self.values[idx]
        Ur, Vc = U[rows], V[cols]
        error = (Ur * Vc).sum(dim=1) - values
        c = self.scale / rows.numel()
        value = (0.5 * c) * error.dot(error)
        if not need_grad:
            return value, None
        # d/dU_i sums error * V_j over the observed entries of row i (index_add_ is
        # deterministic on CPU), and likewise for V.
        weighted = error.unsqueeze(1) * c
        grad_U = torch.zeros_like(U).index_add_(0, rows, weighted * Vc)
        grad_V = torch.zeros_like(V).index_add_(0, cols, weighted * Ur)
        return value, [grad_U, grad_V]

    def _loss_and_grad(self) -> tuple[float, int]:
        idx = self._next_batch()
        value, grads = self._eval(idx, True)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        return value.item(), self.n if idx is None else idx.numel()

    def _loss(self) -> tuple[float, int]:
        return self._eval(None, False)[0].item(), self.n

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), **self.details}


class DeepLinear(RegressionProblem):
    """Mean squared error of ``W_depth ... W_1 x`` against a linear map of Gaussian inputs."""

    name = "deep_linear"


def sample_matrix_completion(
    rng: np.random.Generator,
    rows: Spec = (20, 40),
    cols: Spec = (20, 40),
    rank: Spec = (2, 4),
    extra_rank: Spec = (0, 2),
    observed: Spec = (0.3, 0.6),
    noise: Spec = [0.0, 0.01, 0.1],  # noqa: B006 (read only)
    init: Spec = (0.01, 0.3),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> MatrixCompletion:
    """A ``rows x cols`` matrix of rank ``rank`` (entries of unit variance), part observed.

    Each entry is observed with probability ``observed``, raised where needed so that there are
    at least three observations per degree of freedom of the true factors; observed values get
    Gaussian noise of std ``noise``. The fit has rank ``rank + extra_rank`` and starts from
    Gaussian factors of std ``init`` (a small start near the saddle at zero, as is usual).
    """
    m, k = _draw(rng, rows, integer=True), _draw(rng, cols, integer=True)
    r, extra = _draw(rng, rank, integer=True), _draw(rng, extra_rank, integer=True)
    frac, sd = _draw(rng, observed), _draw(rng, noise)
    std, s = _draw(rng, init, log=True), _draw(rng, scale, log=True)
    bs = _draw(rng, batch_size, integer=True)
    A = rng.standard_normal((m, r)) / r**0.25
    B = rng.standard_normal((k, r)) / r**0.25
    frac = min(1.0, max(frac, 3.0 * r * (m + k - r) / (m * k)))
    mask = rng.random((m, k)) < frac
    i, j = np.nonzero(mask)
    values = (A @ B.T)[i, j] + sd * rng.standard_normal(i.size)
    fit = r + extra
    U, V = std * rng.standard_normal((m, fit)), std * rng.standard_normal((k, fit))
    details = {"rows": m, "cols": k, "rank": r, "fit_rank": fit, "noise": sd, "init": std}
    return MatrixCompletion(
        _tensor(U, dtype),
        _tensor(V, dtype),
        torch.as_tensor(i),
        torch.as_tensor(j),
        _tensor(values, dtype),
        s,
        bs,
        _seed(rng),
        details=details,
    )


def sample_deep_linear(
    rng: np.random.Generator,
    dim: Spec = (6, 12),
    hidden: Spec = (8, 16),
    depth: Spec = (4, 8),
    cond: Spec = (1.0, 100.0),
    n: Spec = (128, 256),
    batch_size: Spec = None,
    scale: Spec = 1.0,
    dtype: torch.dtype = torch.float32,
) -> DeepLinear:
    """``depth`` bias-free linear layers ``dim -> hidden -> ... -> hidden -> dim``, no activation.

    Targets are ``T x`` for Gaussian inputs ``x``, where ``T`` has singular values log-spaced
    in ``[1/cond, 1]`` times ``sqrt(dim / sum of their squares)``, so targets have unit variance
    per output. ``hidden`` is raised to at least ``dim``, so the chain can represent ``T`` and
    the minimum is 0. Each layer starts N(0, 1 / fan_in) (LeCun's normal init). Meant for
    Nesterov momentum.
    """
    d, h = _draw(rng, dim, integer=True), _draw(rng, hidden, integer=True)
    L, k = max(2, _draw(rng, depth, integer=True)), _draw(rng, cond, log=True)
    m = _draw(rng, n, integer=True)
    s, bs = _draw(rng, scale, log=True), _draw(rng, batch_size, integer=True)
    h = max(h, d)
    q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    sv = np.logspace(-np.log10(k), 0.0, d)
    T = (q1 * (sv * math.sqrt(d / (sv * sv).sum()))) @ q2.T
    X = rng.standard_normal((m, d))
    widths = [d] + [h] * (L - 1) + [d]
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=False, dtype=dtype)
        _fill_(layer.weight, rng.normal(0.0, 1.0 / math.sqrt(fan_in), (fan_out, fan_in)))
        layers.append(layer)
    details = {"dim": d, "hidden": h, "depth": L, "cond": k}
    return DeepLinear(
        nn.Sequential(*layers),
        _tensor(X, dtype),
        _tensor(X @ T.T, dtype),
        s,
        bs,
        _seed(rng),
        details=details,
    )
