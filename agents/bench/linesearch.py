"""Descent loops that pay for every evaluation: line searches and a Newton reference.

A line search evaluates trial points, so it cannot run inside `qlr.envs.run.run_inner` (one
gradient per step). The loops here charge honestly through the problem's own counters:

* every trial point is one function evaluation (`Problem.loss`);
* the gradient at an accepted point is one gradient evaluation (`Problem.loss_and_grad`);
* a Wolfe search also needs the slope at trial points that pass the Armijo test: one gradient
  evaluation each (reused when that point is accepted).

The direction is steepest descent (``-grad``) except for Newton. Every loop stops before it would
exceed its `Budget`; the parameters are then left at the last accepted point. These methods need
a deterministic objective: a minibatch gradient makes the sufficient-decrease tests meaningless.

The budget and the result record are `qlr.agents.bench.budget.Budget` and
`qlr.agents.bench.methods.MethodResult`, shared with every other method.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from qlr.agents.bench.budget import NO_EXAMPLES, Budget, examples_per_eval
from qlr.agents.bench.methods import MethodResult
from qlr.envs.problems import Problem, VectorProblem
from qlr.envs.run import DIVERGENCE_FACTOR

# --------------------------------------------------------------------------- charging


class EvalMeter:
    """What a run has been charged since it started, and whether it can afford more.

    Reads the problem's counters, so anything that evaluates the problem is charged.
    """

    def __init__(self, problem: Problem, budget: Budget) -> None:
        self.problem = problem
        self.budget = budget
        self._start = (problem.grad_evals, problem.func_evals, problem.examples_seen)
        self._per_grad, self._per_func = examples_per_eval(problem)
        if budget.grad_evals is None and budget.total_evals is None and not self._per_grad:
            raise ValueError(NO_EXAMPLES)

    @property
    def grads(self) -> int:
        return self.problem.grad_evals - self._start[0]

    @property
    def funcs(self) -> int:
        return self.problem.func_evals - self._start[1]

    @property
    def examples(self) -> int:
        return self.problem.examples_seen - self._start[2]

    def can_afford(self, grad: int = 0, func: int = 0) -> bool:
        """True when `grad` more gradient and `func` more function evaluations fit the budget."""
        b = self.budget
        if b.grad_evals is not None and self.grads + grad > b.grad_evals:
            return False
        if b.total_evals is not None and self.grads + self.funcs + grad + func > b.total_evals:
            return False
        more = grad * self._per_grad + func * self._per_func
        return b.examples is None or self.examples + more <= b.examples


@dataclass
class AcceptedStep:
    """One accepted step of a line search, kept so tests can check its conditions.

    Attributes:
        alpha: the accepted step length along ``direction``.
        f_prev: objective at the point the step started from.
        f_new: objective at the accepted point.
        slope: directional derivative ``grad . direction`` at the start (negative).
        reference: the value the sufficient-decrease test compared against (``f_prev`` for a
            monotone search, the max of the last M objectives for a nonmonotone one).
        new_slope: ``grad . direction`` at the accepted point (NaN where it was not computed).
        trials: function evaluations the search spent.
        wolfe: whether the step met the curvature condition too (Wolfe search only).
    """

    alpha: float
    f_prev: float
    f_new: float
    slope: float
    reference: float
    new_slope: float = math.nan
    trials: int = 0
    wolfe: bool = False


# --------------------------------------------------------------------------- the descent loop


class _Descent:
    """Parameters as one flat vector, with charged evaluations and the traces of a run."""

    def __init__(self, problem: Problem, budget: Budget) -> None:
        if problem.stochastic:
            raise ValueError(
                f"line searches need a deterministic objective; {problem.name} uses minibatches"
            )
        self.problem = problem
        self.initial = problem.loss()  # bookkeeping, as in run_inner: not charged
        self.meter = EvalMeter(problem, budget)  # charges start after it
        self.began = time.perf_counter()
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.grad_trace: list[int] = []
        self.func_trace: list[int] = []
        self.example_trace: list[int] = []
        self.steps: list[AcceptedStep] = []

    # parameters <-> flat vector
    def point(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.problem.params]).clone()

    def set_point(self, x: Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for p in self.problem.params:
                n = p.numel()
                p.copy_(x[offset : offset + n].view_as(p))
                offset += n

    def grad(self) -> Tensor:
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                for p in self.problem.params
            ]
        ).clone()

    # charged evaluations
    def value_at(self, x: Tensor) -> float | None:
        """Objective at `x` (one function evaluation), or None when the budget is spent."""
        if not self.meter.can_afford(func=1):
            return None
        self.set_point(x)
        return self.problem.loss()

    def value_and_grad_at(self, x: Tensor, record: bool = False) -> tuple[float, Tensor] | None:
        """Objective and gradient at `x` (one gradient evaluation), or None when spent."""
        if not self.meter.can_afford(grad=1):
            return None
        self.set_point(x)
        f = self.problem.loss_and_grad()
        if record:
            self.record_loss(f)
        return f, self.grad()

    def record_loss(self, f: float) -> None:
        """Note a loss with the evaluations charged so far."""
        self.losses.append(f)
        self.grad_trace.append(self.meter.grads)
        self.func_trace.append(self.meter.funcs)
        self.example_trace.append(self.meter.examples)

    def result(self, final_point: Tensor) -> MethodResult:
        """Leave the parameters at `final_point` and measure the final loss (uncharged)."""
        self.set_point(final_point)
        if len(self.lrs) < len(self.losses):  # the last measured point took no step
            self.lrs.append(math.nan)
        wall = time.perf_counter() - self.began
        initial = self.initial
        grads, funcs, examples = self.meter.grads, self.meter.funcs, self.meter.examples
        final = self.problem.loss()  # bookkeeping, like run_inner's: not charged to the method
        limit = DIVERGENCE_FACTOR * abs(initial) if initial != 0 else math.inf
        diverged = not math.isfinite(final) or final > limit
        return MethodResult(
            initial_loss=initial,
            final_loss=math.inf if diverged else final,
            diverged=diverged,
            grad_evals=grads,
            func_evals=funcs,
            examples_seen=examples,
            wall_time=wall,
            losses=self.losses,
            lrs=self.lrs,
            grad_trace=self.grad_trace,
            func_trace=self.func_trace,
            example_trace=self.example_trace,
            extra={"steps": self.steps},
        )


# A search finds a step along d from x; it returns (alpha, f_new, g_new or None, record) or
# None when it found nothing acceptable or ran out of budget.
_SearchOutcome = tuple[float, float, Tensor | None, AcceptedStep] | None


def _backtrack(
    run: _Descent,
    x: Tensor,
    d: Tensor,
    f: float,
    slope: float,
    reference: float,
    alpha: float,
    c1: float,
    shrink: float,
    max_trials: int,
) -> _SearchOutcome:
    """Shrink `alpha` until f(x + alpha d) <= reference + c1 alpha slope (Armijo / GLL)."""
    for trial in range(1, max_trials + 1):
        f_new = run.value_at(x + alpha * d)
        if f_new is None:
            return None
        if math.isfinite(f_new) and f_new <= reference + c1 * alpha * slope:
            return alpha, f_new, None, AcceptedStep(alpha, f, f_new, slope, reference, trials=trial)
        alpha *= shrink
    return None


def _gradient_descent(
    problem: Problem,
    budget: Budget,
    first_alpha: float,
    search: Callable[[_Descent, Tensor, Tensor, float, float, float, list[float]], _SearchOutcome],
    next_alpha: Callable[[float, float, float], float],
) -> MethodResult:
    """Steepest descent with step lengths from `search`.

    `search(run, x, d, f, slope, alpha0, history)` returns the accepted step; `next_alpha(alpha,
    old_slope, new_slope)` gives the first trial of the next search.
    """
    run = _Descent(problem, budget)
    x = run.point()
    history: list[float] = []  # objectives at accepted points, oldest first
    evaluated = run.value_and_grad_at(x, record=True)
    alpha = first_alpha
    while evaluated is not None:
        f, g = evaluated
        if not math.isfinite(f):
            break
        history.append(f)
        d = -g
        slope = float(g.double().dot(d.double()))
        if not slope < 0:  # a stationary point: nothing left to gain
            break
        found = search(run, x, d, f, slope, alpha, history)
        if found is None:  # no acceptable step within the trials, or the budget is spent
            break
        step, f_new, g_new, record = found
        run.lrs.append(step)
        run.steps.append(record)
        x = x + step * d
        if g_new is not None:  # the Wolfe search has already paid for this gradient
            run.record_loss(f_new)
            evaluated = (f_new, g_new)
        else:
            evaluated = run.value_and_grad_at(x, record=True)
        if evaluated is not None:
            alpha = next_alpha(step, slope, -float(evaluated[1].double().square().sum()))
    return run.result(x)


# --------------------------------------------------------------------------- the searches


def armijo(
    problem: Problem,
    lr: float,
    budget: Budget,
    c1: float = 1e-4,
    shrink: float = 0.5,
    growth: float = 2.0,
    max_trials: int = 60,
) -> MethodResult:
    """Gradient descent with Armijo backtracking.

    Each search starts from the previous accepted step times `growth` (the first from `lr`) and
    halves it until ``f(x - a g) <= f(x) - c1 a |g|^2``.

    Args:
        problem: a deterministic problem.
        lr: first trial step.
        budget: evaluations the run may spend.
        c1: sufficient-decrease constant.
        shrink: backtracking factor.
        growth: factor on the last accepted step for the next first trial.
        max_trials: trials per search before giving up (the run then stops).
    """

    def search(run, x, d, f, slope, alpha, history):
        return _backtrack(run, x, d, f, slope, f, alpha, c1, shrink, max_trials)

    return _gradient_descent(problem, budget, lr, search, lambda a, *_: a * growth)


def nonmonotone_reference(history: list[float], memory: int) -> float:
    """The Grippo-Lampariello-Lucidi reference: the max of the last `memory` objectives."""
    return max(history[-memory:])


def nonmonotone(
    problem: Problem,
    lr: float,
    budget: Budget,
    memory: int = 10,
    c1: float = 1e-4,
    shrink: float = 0.5,
    growth: float = 2.0,
    max_trials: int = 60,
) -> MethodResult:
    """Gradient descent with the nonmonotone line search of Grippo, Lampariello and Lucidi (1986).

    Like `armijo`, but a step is accepted when ``f(x - a g) <= max(last M objectives) - c1 a
    |g|^2``: the objective may rise for a while, which lets longer steps through narrow valleys.
    """

    def search(run, x, d, f, slope, alpha, history):
        reference = nonmonotone_reference(history, memory)
        return _backtrack(run, x, d, f, slope, reference, alpha, c1, shrink, max_trials)

    return _gradient_descent(problem, budget, lr, search, lambda a, *_: a * growth)


def wolfe(
    problem: Problem,
    lr: float,
    budget: Budget,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_trials: int = 40,
    alpha_max: float = 1e10,
) -> MethodResult:
    """Gradient descent with a strong Wolfe line search (Nocedal & Wright, Algorithms 3.5-3.6).

    A step is accepted when ``f(x + a d) <= f(x) + c1 a g.d`` and ``|g(x + a d).d| <= c2 |g.d|``.
    Bracketing doubles the trial step; zooming interpolates a quadratic through the low end's
    value and slope and the high end's value, safeguarded to the middle 80 % of the bracket.
    The first trial of each search is ``a_prev * (g_prev.d_prev) / (g.d)`` (N&W eq. 3.60),
    the first of all `lr`. If the zoom runs out of trials, the best Armijo point found is taken
    (recorded with ``wolfe=False``).
    """

    def search(run, x, d, f, slope, alpha, history):
        return _strong_wolfe(run, x, d, f, slope, alpha, c1, c2, max_trials, alpha_max)

    def next_alpha(alpha, old_slope, new_slope):
        return alpha * old_slope / new_slope if new_slope < 0 else alpha

    return _gradient_descent(problem, budget, lr, search, next_alpha)


def _strong_wolfe(
    run: _Descent,
    x: Tensor,
    d: Tensor,
    f0: float,
    slope0: float,
    alpha: float,
    c1: float,
    c2: float,
    max_trials: int,
    alpha_max: float,
) -> _SearchOutcome:
    trials = 0

    def probe(a: float) -> tuple[float, float, Tensor | None] | None:
        """(f, slope, grad) at x + a d; slope and grad only where Armijo holds (else NaN, None)."""
        nonlocal trials
        trials += 1
        f = run.value_at(x + a * d)
        if f is None:
            return None
        if not (math.isfinite(f) and f <= f0 + c1 * a * slope0):
            return f, math.nan, None
        evaluated = run.value_and_grad_at(x + a * d)
        if evaluated is None:
            return None
        g = evaluated[1]
        return f, float(g.double().dot(d.double())), g

    def accept(a: float, f: float, s: float, g: Tensor, wolfe_ok: bool) -> _SearchOutcome:
        return a, f, g, AcceptedStep(a, f0, f, slope0, f0, s, trials, wolfe_ok)

    # Points are (alpha, f, slope, grad); `lo` always satisfies Armijo and has its slope.
    best = None  # the lowest Armijo point seen, taken if the zoom runs out of trials
    prev = (0.0, f0, slope0, None)
    a = min(alpha, alpha_max)
    bracket = None  # (lo, (alpha_hi, f_hi))
    while trials < max_trials:
        probed = probe(a)
        if probed is None:
            return None
        f, s, g = probed
        if math.isnan(s) or (trials > 1 and f >= prev[1]):
            bracket = (prev, (a, f))
            break
        if best is None or f < best[1]:
            best = (a, f, s, g)
        if abs(s) <= -c2 * slope0:
            return accept(a, f, s, g, True)
        if s >= 0:
            bracket = ((a, f, s, g), prev[:2])
            break
        prev = (a, f, s, g)
        a = min(2.0 * a, alpha_max)
    while bracket is not None and trials < max_trials:
        lo, hi = bracket
        a = _interpolate(lo[0], lo[1], lo[2], hi[0], hi[1])
        probed = probe(a)
        if probed is None:
            return None
        f, s, g = probed
        if math.isnan(s) or f >= lo[1]:
            bracket = (lo, (a, f))
            continue
        if best is None or f < best[1]:
            best = (a, f, s, g)
        if abs(s) <= -c2 * slope0:
            return accept(a, f, s, g, True)
        new_hi = lo[:2] if s * (hi[0] - lo[0]) >= 0 else hi
        bracket = ((a, f, s, g), new_hi)
    if best is not None:
        return accept(*best, False)
    return None


def _interpolate(a_lo: float, f_lo: float, s_lo: float, a_hi: float, f_hi: float) -> float:
    """Minimiser of the quadratic through (a_lo, f_lo, slope s_lo) and (a_hi, f_hi).

    Safeguarded to the middle 80 % of the bracket (bisection when the quadratic has no
    minimum there), so the bracket shrinks by at least 10 % per trial.
    """
    width = a_hi - a_lo
    curvature = f_hi - f_lo - s_lo * width
    a = a_lo + 0.5 * width
    if math.isfinite(curvature) and curvature > 0:
        a = a_lo - s_lo * width * width / (2.0 * curvature)
    lo, hi = sorted((a_lo + 0.1 * width, a_hi - 0.1 * width))
    return min(max(a, lo), hi)


# --------------------------------------------------------------------------- Newton reference

NEWTON_MAX_DIM = 50


def newton(
    problem: Problem,
    budget: Budget,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_trials: int = 30,
    max_dim: int = NEWTON_MAX_DIM,
) -> MethodResult:
    """Damped Newton's method: a reference line on small analytic problems, not a competitor.

    The Hessian comes from `torch.autograd.functional.hessian` on the problem's objective as a
    function of its vector. Where it is not positive definite a multiple of the identity is
    added until a Cholesky factorisation succeeds (Nocedal & Wright, Algorithm 3.3); the step
    then backtracks from 1 under the Armijo test, so a convex quadratic is solved in one step.

    Charging: one gradient evaluation per iterate and one function evaluation per trial, as for
    the line searches. Hessians are *not* charged (each costs about `dim` gradients); their
    count is in ``extra["hessian_evals"]``.

    Raises:
        ValueError: on a problem that is not one analytic vector of at most `max_dim` entries.
    """
    if not isinstance(problem, VectorProblem) or problem.dim > max_dim:
        raise ValueError(
            f"Newton's method here needs an analytic vector problem of dim <= {max_dim}; "
            f"got {problem.name} with dim {problem.dim}"
        )
    run = _Descent(problem, budget)
    x = run.point()
    hessians = 0
    evaluated = run.value_and_grad_at(x, record=True)
    while evaluated is not None:
        f, g = evaluated
        if not math.isfinite(f):
            break
        hessian = torch.autograd.functional.hessian(problem.value_at, x.detach())
        hessians += 1
        d = newton_direction(hessian.double(), g.double()).to(x.dtype)
        slope = float(g.double().dot(d.double()))
        if not slope < 0:
            break
        found = _backtrack(run, x, d, f, slope, f, 1.0, c1, shrink, max_trials)
        if found is None:
            break
        step, _, _, record = found
        run.lrs.append(step)
        run.steps.append(record)
        x = x + step * d
        evaluated = run.value_and_grad_at(x, record=True)
    result = run.result(x)
    result.extra["hessian_evals"] = hessians
    return result


def newton_direction(hessian: Tensor, grad: Tensor, max_tries: int = 60) -> Tensor:
    """``-(H + tau I)^{-1} g`` with the smallest tau >= 0 (doubling) that makes it factorise."""
    diag = hessian.diagonal()
    beta = 1e-3 * max(float(diag.abs().mean()), 1e-12)  # relative, so any loss scale works
    tau = 0.0 if float(diag.min()) > 0 else beta - float(diag.min())
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype)
    for _ in range(max_tries):
        factor, info = torch.linalg.cholesky_ex(hessian + tau * eye)
        if int(info) == 0:
            return -torch.cholesky_solve(grad.unsqueeze(1), factor).squeeze(1)
        tau = max(2.0 * tau, beta)
    return -grad  # not reached for a finite Hessian; steepest descent keeps the run going
