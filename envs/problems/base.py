"""The problem base classes and the helpers every family's factory shares.

:class:`Problem` keeps the evaluation counters, :class:`VectorProblem` is the base of the
analytic families (one vector, an analytic gradient) and :class:`DataProblem` the base of the
families whose objective is a mean over data examples, with :class:`Minibatcher` drawing their
minibatches.

Range arguments of the ``sample_<family>`` factories (a :data:`Spec`) accept:

* a scalar (or ``None``): used as is;
* a 2-tuple ``(lo, hi)``: drawn uniformly (integers inclusive; scale-like quantities such as
  ``cond``, ``scale`` and ``noise`` are drawn log-uniformly);
* a list: one element picked uniformly, then resolved by the two rules above.

:func:`_draw` resolves one such argument; :func:`_seed` draws a minibatch seed.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch
from torch import Tensor

# A value, a (lo, hi) range, or a list of choices; see the module docstring.
Spec = int | float | str | tuple | list | None


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
