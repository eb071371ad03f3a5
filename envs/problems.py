"""Inner optimisation problems that a learning-rate controller is trained and tested on.

Each family has a problem class and a module-level ``sample_<family>(rng, **ranges)`` factory
that draws one instance from a :class:`numpy.random.Generator` (same generator state, same
instance). ``FAMILIES`` maps family names to these factories.

Range arguments of the factories accept:

* a scalar (or ``None``): used as is;
* a 2-tuple ``(lo, hi)``: drawn uniformly (integers inclusive; scale-like quantities such as
  ``cond``, ``scale`` and ``noise`` are drawn log-uniformly);
* a list: one element picked uniformly, then resolved by the two rules above.

Objectives are non-negative. Analytic families are shifted so that the global minimum is 0;
``least_squares`` is shifted to a minimum of 0 in full-batch mode only (see its docstring), and
the classification families are left unshifted. Everything is multiplied by ``scale``.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

# A value, a (lo, hi) range, or a list of choices; see the module docstring.
Spec = int | float | str | tuple | list | None


# --------------------------------------------------------------------------- base classes


class Problem(abc.ABC):
    """One instance of an inner optimisation problem.

    Subclasses implement :meth:`_loss_and_grad` and :meth:`_loss`, which return the objective
    and the number of data examples they touched; this base class keeps the counters.

    Attributes:
        name: Family name, e.g. ``"quadratic"``.
        params: Leaf tensors with ``requires_grad=True`` that an optimiser updates.
        scale: Factor multiplying the whole objective (read-only: some families fold it
            into cached tensors at construction).
        stochastic: True when :meth:`loss_and_grad` uses minibatches.
        grad_evals: Number of :meth:`loss_and_grad` calls.
        func_evals: Number of :meth:`loss` calls.
        examples_seen: Data examples processed by both methods (0 for analytic problems).
    """

    name: str = "problem"

    def __init__(self, params: list[Tensor], scale: float = 1.0, stochastic: bool = False):
        self.params = params
        self._scale = float(scale)
        self.stochastic = stochastic
        self.grad_evals = 0
        self.func_evals = 0
        self.examples_seen = 0

    @property
    def scale(self) -> float:
        """Factor multiplying the whole objective."""
        return self._scale

    @property
    def dim(self) -> int:
        """Number of scalar parameters."""
        return sum(p.numel() for p in self.params)

    def loss_and_grad(self) -> float:
        """Objective at the current params (a minibatch one when stochastic).

        Overwrites ``p.grad`` of every parameter with the gradient of the returned value.
        """
        value, examples = self._loss_and_grad()
        self.grad_evals += 1
        self.examples_seen += examples
        return value

    def loss(self) -> float:
        """Full deterministic objective at the current params, without gradient."""
        with torch.no_grad():
            value, examples = self._loss()
        self.func_evals += 1
        self.examples_seen += examples
        return value

    def info(self) -> dict[str, Any]:
        """Name, size and family-specific fields describing this instance."""
        return {
            "name": self.name,
            "dim": self.dim,
            "scale": self.scale,
            "stochastic": self.stochastic,
            **self._info(),
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.info().items() if k != "name")
        return f"{type(self).__name__}({fields})"

    @abc.abstractmethod
    def _loss_and_grad(self) -> tuple[float, int]:
        """Return (objective, examples used) and write ``p.grad`` for every parameter."""

    @abc.abstractmethod
    def _loss(self) -> tuple[float, int]:
        """Return (full objective, examples used); runs under ``torch.no_grad``."""

    def _info(self) -> dict[str, Any]:
        return {}


class VectorProblem(Problem):
    """A problem over one parameter vector ``x`` with an analytic gradient.

    Subclasses implement :meth:`_value_and_grad` on a detached vector; no autograd graph is
    built, which keeps a step at a few microseconds of torch work.
    """

    def __init__(self, x0: Tensor, scale: float = 1.0):
        super().__init__([x0.detach().clone().requires_grad_(True)], scale)

    @property
    def x(self) -> Tensor:
        """The parameter vector."""
        return self.params[0]

    def _loss_and_grad(self) -> tuple[float, int]:
        value, grad = self._value_and_grad(self.params[0].detach())
        self.params[0].grad = grad
        return value.item(), 0

    def _loss(self) -> tuple[float, int]:
        return self._value(self.params[0].detach()).item(), 0

    @abc.abstractmethod
    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the scaled objective (0-dim tensor) and its gradient at ``x``."""

    def value_at(self, x: Tensor) -> Tensor:
        """The scaled objective at any point ``x`` (differentiable: used for exact Hessians)."""
        return self._value(x)

    def _value(self, x: Tensor) -> Tensor:
        return self._value_and_grad(x)[0]


# --------------------------------------------------------------------------- analytic families


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


# --------------------------------------------------------------------------- data families


class Minibatcher:
    """Epoch-wise shuffled minibatch indices, drawn from the problem's own generator.

    Each epoch is a fresh permutation walked in consecutive slices; a tail shorter than
    ``batch_size`` is skipped so every batch has the same size.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n = n
        self.batch_size = batch_size
        self.generator = generator
        self._perm = torch.randperm(n, generator=generator)
        self._pos = 0

    def next(self) -> Tensor:
        """Indices of the next minibatch."""
        if self._pos + self.batch_size > self.n:
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    # A copy (copy.deepcopy, pickle) carries the generator's state, so it draws the same
    # batches as the original from then on. Written out rather than left to torch.Generator,
    # which cannot be pickled in every torch version this package supports.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["generator"] = self.generator.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.generator = torch.Generator()
        self.generator.set_state(state["generator"])


class DataProblem(Problem):
    """A problem whose objective is a mean over ``n`` data examples.

    With ``batch_size=None`` (or ``>= n``) every :meth:`loss_and_grad` uses all data and the
    problem is deterministic; otherwise it draws minibatches of ``batch_size`` examples.
    :meth:`loss` always uses all ``n`` examples (data sets here are at most a few thousand).
    """

    def __init__(
        self,
        params: list[Tensor],
        n: int,
        scale: float = 1.0,
        batch_size: int | None = None,
        seed: int = 0,
    ):
        self.n = n
        self.batch_size = None if batch_size is None or batch_size >= n else int(batch_size)
        super().__init__(params, scale, stochastic=self.batch_size is not None)
        self._batches = None
        if self.batch_size is not None:
            gen = torch.Generator().manual_seed(seed)
            self._batches = Minibatcher(n, self.batch_size, gen)

    def set_batch_size(self, batch_size: int) -> None:
        """Change the minibatch size from the next draw on (a schedule that grows the batch).

        Raises:
            ValueError: the problem is full-batch.
        """
        if self._batches is None:
            raise ValueError(f"{self.name} is full-batch: it has no minibatch size to change")
        size = int(min(max(1, batch_size), self.n))
        self._batches.batch_size = size
        self.batch_size = size

    def _next_batch(self) -> Tensor | None:
        """Indices for the next gradient call, or None for the full data set."""
        return None if self._batches is None else self._batches.next()

    def _info(self) -> dict[str, Any]:
        return {"n": self.n, "batch_size": self.batch_size}


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


class MLPClassifier(ModuleProblem):
    """Cross-entropy of an MLP classifier on fixed synthetic data, times ``scale``."""

    name = "mlp"


class DigitsMLP(MLPClassifier):
    """MLP classifier on the training part of scikit-learn's 8x8 digits."""

    name = "digits_mlp"


# --------------------------------------------------------------------------- sampling helpers


def _draw(rng: np.random.Generator, spec: Spec, log: bool = False, integer: bool = False) -> Any:
    """Resolve a range spec (see module docstring) to one value."""
    if isinstance(spec, list):
        return _draw(rng, spec[int(rng.integers(len(spec)))], log, integer)
    if isinstance(spec, tuple):
        lo, hi = spec
        if integer:
            return int(rng.integers(int(lo), int(hi) + 1))
        if log:
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return float(rng.uniform(lo, hi))
    return spec


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def _tensor(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(a, dtype=dtype)


def _column_scales(rng: np.random.Generator, dim: int, spread: float) -> np.ndarray:
    """Per-feature scales log-uniform in [1/spread, spread]: makes the data ill-conditioned."""
    return np.exp(rng.uniform(-np.log(spread), np.log(spread), size=dim))


def make_mlp(
    sizes: list[int], activation: str, rng: np.random.Generator, dtype: torch.dtype
) -> nn.Sequential:
    """An MLP with layer widths ``sizes`` initialised from ``rng`` (PyTorch's default ranges).

    Layers are built with ``skip_init`` so that construction never touches torch's global RNG.
    """
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}
    if activation not in act:
        raise ValueError(f"unknown activation {activation!r}; valid: {sorted(act)}")
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out, dtype=dtype)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            linear.weight.copy_(_tensor(rng.uniform(-bound, bound, (fan_out, fan_in)), dtype))
            linear.bias.copy_(_tensor(rng.uniform(-bound, bound, fan_out), dtype))
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(act[activation]())
    return nn.Sequential(*layers)


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


# --------------------------------------------------------------------------- more families
# Models people train (a transformer language model, recurrent nets, a CNN) and held-out
# ones that differ in data and architecture. All are built with skip_init and filled from
# the numpy generator, so that construction never touches torch's global RNG.


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


def _fill_(param: Tensor, values: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(_tensor(values, param.dtype))


def _fill_uniform_(module: nn.Module, rng: np.random.Generator, bound: float) -> None:
    """Every parameter of ``module`` uniform in ``[-bound, bound]`` (torch's RNN default)."""
    for p in module.parameters():
        _fill_(p, rng.uniform(-bound, bound, tuple(p.shape)))


def _linear(
    fan_in: int, fan_out: int, rng: np.random.Generator, dtype: torch.dtype, bias: bool = True
) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default init ranges, drawn from ``rng``."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=bias, dtype=dtype)
    _fill_uniform_(layer, rng, 1.0 / math.sqrt(fan_in))
    return layer


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused query/key/value projection."""

    def __init__(self, d_model: int, heads: int, dtype: torch.dtype):
        super().__init__()
        self.heads = heads
        self.qkv = nn.utils.skip_init(nn.Linear, d_model, 3 * d_model, dtype=dtype)
        self.proj = nn.utils.skip_init(nn.Linear, d_model, d_model, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int, dtype: torch.dtype):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, dtype=dtype)  # ones and zeros: no random init
        self.attn = CausalSelfAttention(d_model, heads, dtype)
        self.ln2 = nn.LayerNorm(d_model, dtype=dtype)
        hidden = mlp_ratio * d_model
        self.mlp = nn.Sequential(
            nn.utils.skip_init(nn.Linear, d_model, hidden, dtype=dtype),
            nn.GELU(),
            nn.utils.skip_init(nn.Linear, hidden, d_model, dtype=dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerLM(nn.Module):
    """Token and learned position embeddings, pre-LN blocks, a final LayerNorm and a head.

    With ``tied=True`` the output head is the transposed token embedding. Initialised as
    GPT-2 is, from ``rng``: weights N(0, 0.02), biases 0, LayerNorms 1 and 0, and the
    projections back into the residual stream N(0, 0.02 / sqrt(2 layers)), so that the
    stream's variance does not grow with depth.
    """

    def __init__(
        self,
        vocab: int,
        context: int,
        d_model: int,
        layers: int,
        heads: int,
        mlp_ratio: int,
        tied: bool,
        rng: np.random.Generator,
        dtype: torch.dtype,
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not a multiple of heads={heads}")
        self.tok = nn.utils.skip_init(nn.Embedding, vocab, d_model, dtype=dtype)
        self.pos = nn.Parameter(torch.zeros(context, d_model, dtype=dtype))
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, heads, mlp_ratio, dtype) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(d_model, dtype=dtype)
        self.head = (
            None if tied else nn.utils.skip_init(nn.Linear, d_model, vocab, bias=False, dtype=dtype)
        )
        std, residual_std = 0.02, 0.02 / math.sqrt(2 * layers)
        norms = {
            id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()
        }
        for name, p in self.named_parameters():
            if id(p) in norms:
                continue  # built as ones and zeros
            if name.endswith("bias"):
                _fill_(p, np.zeros(tuple(p.shape)))
            else:
                residual = name.endswith(("attn.proj.weight", "mlp.2.weight"))
                _fill_(p, rng.normal(0.0, residual_std if residual else std, tuple(p.shape)))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.tok.weight.T if self.head is None else self.head(x)


class RecurrentTagger(nn.Module):
    """A one-layer GRU or LSTM with a linear head on every step (optional token embedding)."""

    def __init__(
        self,
        cell: type[nn.GRU] | type[nn.LSTM],
        inputs: int,
        hidden: int,
        outputs: int,
        rng: np.random.Generator,
        dtype: torch.dtype,
        vocab: int | None = None,
    ):
        super().__init__()
        self.embed = None
        if vocab is not None:
            self.embed = nn.utils.skip_init(nn.Embedding, vocab, inputs, dtype=dtype)
            _fill_(self.embed.weight, rng.standard_normal((vocab, inputs)))  # torch's N(0, 1)
        # skip_init by hand (it rejects RNN classes, whose signature hides ``device``): build
        # on the meta device, then allocate; the values come from rng just below.
        rnn = cell(inputs, hidden, batch_first=True, device="meta", dtype=dtype)
        self.rnn = rnn.to_empty(device="cpu")
        _fill_uniform_(self.rnn, rng, 1.0 / math.sqrt(hidden))
        self.head = _linear(hidden, outputs, rng, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.embed is not None:
            x = self.embed(x)
        return self.head(self.rnn(x)[0])


class ResidualMLP(nn.Module):
    """``Linear``, then blocks ``x + Linear(act(LayerNorm(x)))``, then ``LayerNorm``, act, head."""

    def __init__(
        self,
        features: int,
        hidden: int,
        blocks: int,
        classes: int,
        activation: str,
        rng: np.random.Generator,
        dtype: torch.dtype,
    ):
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}
        if activation not in act:
            raise ValueError(f"unknown activation {activation!r}; valid: {sorted(act)}")
        self.inp = _linear(features, hidden, rng, dtype)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden, dtype=dtype),
                act[activation](),
                _linear(hidden, hidden, rng, dtype),
            )
            for _ in range(blocks)
        )
        self.out = nn.Sequential(
            nn.LayerNorm(hidden, dtype=dtype),
            act[activation](),
            _linear(hidden, classes, rng, dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return self.out(x)


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
}
"""Family name -> ``sample(rng, **ranges) -> Problem``."""
