"""The baselines a learned learning-rate controller is compared with, behind one interface.

A `Method` is a name and a function ``run(problem, optimizer, lr, budget) -> MethodResult``:
given a fresh problem instance, the name of an inner optimizer, an initial learning rate and a
`Budget`, it trains the problem and returns the final full loss, the per-step losses and rates
and what it was charged. Methods that are "an optimizer plus a hook after each step" all go
through `qlr.envs.run.run_inner`, the same loop `QLRScheduler` is scored in; line searches and
Newton's method evaluate trial points and have their own loops in `qlr.agents.bench.linesearch`.

=====================  ========================================================================
method                 what it does (defaults)
=====================  ========================================================================
``constant``           the initial rate throughout
``step``               ``StepLR``: x0.1 after each third of the budget
``cosine``             ``CosineAnnealingLR`` from the initial rate to 0 over the budget
``plateau``            ``ReduceLROnPlateau`` on the step loss (torch defaults: x0.1, patience 10)
``armijo``             steepest descent, Armijo backtracking (c1 1e-4, x0.5; next search starts
                       at the last step x2)
``wolfe``              steepest descent, strong Wolfe search (c1 1e-4, c2 0.9)
``nonmonotone``        steepest descent, Grippo-Lampariello-Lucidi search (max of last M=10)
``newton``             damped Newton, backtracking from 1 (analytic problems, dim <= 50)
``hypergradient``      Baydin et al. (2018): SGD-HD / SGDN-HD / Adam-HD on the inner optimizer,
                       beta 1e-3 (sgd, momentum, nesterov) or 1e-7 (adam), rate kept >= 1e-8
``rule``               x2 while the loss falls and successive gradients agree, x0.5 when it
                       rises, else hold; every 5 steps, rate in [1e-8, 10]
``slope_rule``         `qlr.rules.slope_rule` through `QLRScheduler`: reads the block median of
                       the slope ratio r along the update taken; x1.41 when r > 0.5, x0.5 when
                       r < -0.9, else hold; every 5 steps. ``slope_rule:up=2,raise_above=0.3``
                       sets its thresholds and factors
``graduated_lr``       Sato & Iiduka: 5 stages, lr x0.7071 per stage (fixed batch)
``graduated_batch``    5 stages, batch x2 per stage (fixed lr)
``graduated_hybrid``   5 stages, lr x0.866 and batch x1.5 per stage
``dadapt``             D-Adaptation (DAdaptSGD for sgd/momentum, DAdaptAdam for adam), lr 1
``prodigy``            Prodigy, lr 1 (replaces the inner optimizer)
``schedulefree``       Schedule-Free SGD (momentum 0.9) for sgd/momentum, AdamW (wd 0) for adam
``dog``                DoG, lr 1 (replaces the inner optimizer)
``linear``             linear decay from the initial rate to 0 over the budget
``wsd``                warmup-stable-decay: linear warmup over 5 % of the budget, the initial
                       rate held, linear decay to 0 over the last 20 %
``oracle_cosine``      reference line: cosine to 0 from the best of 13 peak rates (1e-5 ... 10)
                       in hindsight, per instance and optimizer
``default_budget``     `QLRScheduler` with the shipped policy, told the budget (``total_steps``)
``policy_budget:PATH`` the same with the policy file PATH
``default``            `QLRScheduler` with the shipped policy
``noise``              `QLRScheduler` with the shipped noise-level policy: rate and batch size,
                       at the suite's budget in examples
``noise_hold_batch``   the same policy with the batch held at its start: an ablation
``policy:PATH``        `QLRScheduler` with the policy file PATH
``teacher``            reference line, not a method: every 5 steps copies the run once per factor
                       (x0.5 ... x2), holds each to the end of the budget (100 steps ahead under
                       a budget in examples), keeps the best; copies cost ~5 x remaining steps
                       per decision, reported, not charged
=====================  ========================================================================

The hypergradient rates beta are the values Baydin et al. used; they are scale-dependent
(``g_t . g_{t-1}`` grows with the square of the loss scale), which is part of what a learned,
scale-free controller should fix. The line searches, Newton and the graduated schedules only
apply to some problems (deterministic, analytic, minibatch); `Method.not_applicable` says why.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from qlr.agents.bench import linesearch, teacher
from qlr.agents.bench.linesearch import Budget, MethodResult, examples_per_eval
from qlr.control import reference_lr, scale_lr
from qlr.envs.optimizers import make_optimizer
from qlr.envs.problems import DataProblem, Problem, VectorProblem
from qlr.envs.run import make_scheduler, run_inner, scheduler_hook
from qlr.policy import Policy

__all__ = [
    "METHODS",
    "Budget",
    "GraduatedSchedule",
    "Hypergradient",
    "Method",
    "MethodResult",
    "RuleController",
    "get_method",
    "graduated_plan",
    "run_scheduled",
    "set_batch_size",
]

MIN_LR, MAX_LR = 1e-8, 10.0  # the bounds QLRScheduler uses by default; the rule shares them

MethodFn = Callable[[Problem, "str | None", "float | None", Budget], MethodResult]
Hook = Callable[[float], None]


def _always(problem: Problem, optimizer: str | None) -> str | None:
    return None


@dataclass(frozen=True)
class Method:
    """A baseline or controller that can be run on a problem.

    Attributes:
        name: the name used on the command line and in tables.
        run: ``run(problem, optimizer, lr, budget)``; `optimizer` is None when
            ``uses_optimizer`` is False and `lr` is None when ``uses_lr`` is False.
        description: one line for tables and logs.
        uses_optimizer: False when the method brings its own update (line searches, Newton,
            Prodigy, DoG): it is then run once per instance, not once per inner optimizer.
        uses_lr: False when the initial rate plays no part (Newton, most LR-free optimizers).
        charges_trials: True when the method spends function evaluations, so that its runs
            differ between a budget of gradient evaluations and one of gradient + function
            evaluations.
        applies: ``applies(problem, optimizer)`` returns why the method cannot run there
            (the run is then recorded as "n/a"), or None.
    """

    name: str
    run: MethodFn
    description: str
    uses_optimizer: bool = True
    uses_lr: bool = True
    charges_trials: bool = False
    applies: Callable[[Problem, str | None], str | None] = _always

    def not_applicable(self, problem: Problem, optimizer: str | None) -> str | None:
        """Why this method cannot run on `problem` with `optimizer`, or None when it can."""
        return self.applies(problem, optimizer)


# --------------------------------------------------------------------------- the common loop


def run_scheduled(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    budget: Budget,
    hook: Hook | None = None,
    steps: int | None = None,
    lr_reader: Callable[[torch.optim.Optimizer], float] | None = None,
    max_examples: int | None = None,
) -> MethodResult:
    """`run_inner` with `hook` after every step, for as many steps as `budget` allows.

    Args:
        problem: the inner problem; `optimizer` must be over its params.
        optimizer: the torch optimizer.
        budget: limits; one gradient evaluation (of one batch) per step.
        hook: called with the step's loss after ``optimizer.step()``, like ``scheduler.step``.
        steps: the number of steps, when the caller has planned them (graduated schedules).
        lr_reader: reads the rate the step just used, for optimizers whose ``lr`` is a
            multiplier (D-Adaptation, Prodigy, DoG); default: the rate before each step.
        max_examples: stop when the gradient evaluations have used this many examples (for a
            hook that changes the batch size as it goes); then `steps` defaults to that many.
    """
    per_grad, per_func = examples_per_eval(problem)
    if steps is None:
        steps = budget.steps(per_grad) if max_examples is None else max_examples
    # run_inner measures the initial loss (one function evaluation) before it starts charging.
    start = (problem.grad_evals, problem.func_evals + 1, problem.examples_seen + per_func)
    traces: tuple[list[int], list[int], list[int]] = ([], [], [])
    effective: list[float] = []

    def after_step(loss: float) -> None:
        _append_counters(traces, problem, start)
        if lr_reader is not None:
            effective.append(lr_reader(optimizer))
        if hook is not None:
            hook(loss)

    result = run_inner(problem, optimizer, steps, after_step=after_step, max_examples=max_examples)
    if len(traces[0]) < len(result.losses):  # a diverging step ends the run before its hook
        _append_counters(traces, problem, start)
    values = {f.name: getattr(result, f.name) for f in fields(result)}
    if lr_reader is not None:
        values["lrs"] = effective + values["lrs"][len(effective) :]
    return MethodResult(
        **values, grad_trace=traces[0], func_trace=traces[1], example_trace=traces[2]
    )


def _append_counters(traces: tuple, problem: Problem, start: tuple[int, int, int]) -> None:
    traces[0].append(problem.grad_evals - start[0])
    traces[1].append(problem.func_evals - start[1])
    traces[2].append(problem.examples_seen - start[2])


def _optimizer(problem: Problem, name: str, lr: float) -> torch.optim.Optimizer:
    return make_optimizer(name, problem.params, lr)


def _steps(problem: Problem, budget: Budget) -> int:
    return budget.steps(examples_per_eval(problem)[0])


# --------------------------------------------------------------------------- torch schedules


def _constant(problem, optimizer, lr, budget):
    return run_scheduled(problem, _optimizer(problem, optimizer, lr), budget)


def _step_lr(problem, optimizer, lr, budget):
    opt = _optimizer(problem, optimizer, lr)
    third = max(1, math.ceil(_steps(problem, budget) / 3))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=third, gamma=0.1)
    return run_scheduled(problem, opt, budget, lambda loss: sched.step())


def _cosine(problem, optimizer, lr, budget):
    opt = _optimizer(problem, optimizer, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, _steps(problem, budget)))
    return run_scheduled(problem, opt, budget, lambda loss: sched.step())


def _linear(problem, optimizer, lr, budget):
    opt = _optimizer(problem, optimizer, lr)
    steps = max(1, _steps(problem, budget))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1.0 - t / steps))
    return run_scheduled(problem, opt, budget, lambda loss: sched.step())


WSD_WARMUP, WSD_DECAY = 0.05, 0.2
"""Warmup-stable-decay: linear warmup over the first 5 % of the budget, the start rate held,
then a linear decay to zero over the last 20 %."""


def wsd_factor(step: int, steps: int) -> float:
    """The warmup-stable-decay multiplier of the start rate at `step` of `steps`."""
    warmup = max(1, round(WSD_WARMUP * steps))
    decay_start = steps - max(1, round(WSD_DECAY * steps))
    if step < warmup:
        return (step + 1) / warmup
    if step >= decay_start:
        return max(0.0, (steps - step) / (steps - decay_start))
    return 1.0


def _wsd(problem, optimizer, lr, budget):
    opt = _optimizer(problem, optimizer, lr)
    steps = max(1, _steps(problem, budget))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: wsd_factor(t, steps))
    return run_scheduled(problem, opt, budget, lambda loss: sched.step())


ORACLE_COSINE_GRID = tuple(float(x) for x in torch.logspace(-5, 1, 13).tolist())
"""The peak rates `oracle_cosine` tries: half-decade steps from 1e-5 to 10."""


def _oracle_cosine(problem, optimizer, lr, budget):
    """Cosine decay to zero from the best peak rate in hindsight: a reference line."""
    from qlr.envs.snapshot import clone_run

    best, best_loss = ORACLE_COSINE_GRID[0], math.inf
    probe = _optimizer(problem, optimizer, best)
    for peak in ORACLE_COSINE_GRID:  # on copies: the run itself is the winner's, below
        copy, _, _ = clone_run(problem, probe)
        result = _cosine(copy, optimizer, peak, budget)
        if not result.diverged and result.final_loss < best_loss:
            best, best_loss = peak, result.final_loss
    return _cosine(problem, optimizer, best, budget)


def _plateau(problem, optimizer, lr, budget):
    opt = _optimizer(problem, optimizer, lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    return run_scheduled(problem, opt, budget, sched.step)


# --------------------------------------------------------------------------- line searches


def _deterministic(problem: Problem, optimizer: str | None) -> str | None:
    return "needs a deterministic objective" if problem.stochastic else None


def _small_analytic(problem: Problem, optimizer: str | None) -> str | None:
    if not isinstance(problem, VectorProblem):
        return "needs an analytic problem"
    if problem.dim > linesearch.NEWTON_MAX_DIM:
        return f"needs dim <= {linesearch.NEWTON_MAX_DIM}"
    return None


# --------------------------------------------------------------------------- hypergradient

HYPERGRADIENT_BETAS: dict[str, float] = {
    "sgd": 1e-3,
    "momentum": 1e-3,
    "nesterov": 1e-3,
    "adam": 1e-7,
}
"""Hypergradient rate per inner optimizer: the values of Baydin et al. (2018), scale-dependent."""


class Hypergradient:
    """Hypergradient descent on the learning rate (Baydin et al., ICLR 2018) as a step hook.

    The paper's rule is ``a_t = a_{t-1} + beta * g_t . u_{t-1}``, applied before step t, where
    ``u`` is the optimizer's update direction (``theta_{t+1} = theta_t - a_t u_t``): the
    gradient for SGD (SGD-HD), the momentum buffer for SGD with momentum, ``m_hat / (sqrt(v_hat)
    + eps)`` for Adam (Adam-HD). A hook only runs after the step, so it redoes step t with the
    new rate (``theta_{t+1} -= (a_t' - a_t) u_t``): exact, because these directions do not
    depend on the rate. The rate is kept at or above `min_lr`, so it is never negative.

    Args:
        optimizer: a ``torch.optim.SGD`` (any momentum, no weight decay) or ``torch.optim.Adam``
            (no weight decay, no amsgrad).
        beta: the hypergradient rate.
        min_lr: floor of the first group's rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, beta: float, min_lr: float = MIN_LR):
        kind = type(optimizer)
        if kind not in (torch.optim.SGD, torch.optim.Adam):
            raise ValueError(f"hypergradient supports SGD and Adam, not {kind.__name__}")
        for group in optimizer.param_groups:
            if group.get("weight_decay", 0) or group.get("amsgrad", False):
                raise ValueError("hypergradient here supports no weight decay and no amsgrad")
        if not beta >= 0 or not min_lr > 0:
            raise ValueError(f"need beta >= 0 and min_lr > 0, got {beta} and {min_lr}")
        self.optimizer = optimizer
        self.beta = float(beta)
        self.min_lr = float(min_lr)
        self._previous: list[torch.Tensor] | None = None  # u_{t-1}, one tensor per param
        self.lrs: list[float] = []  # the rate each step finally used

    def step(self, loss: float) -> None:
        """Adjust the rate with ``g_t . u_{t-1}`` and redo the step just taken with it."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        directions = [self._direction(p, g) for p, g in zip(params, grads, strict=True)]
        lr = reference_lr(self.optimizer)
        if self._previous is not None:
            h = sum(
                float(g.flatten().dot(u.flatten()))
                for g, u in zip(grads, self._previous, strict=True)
            )
            new_lr = max(lr + self.beta * h, self.min_lr) if math.isfinite(h) else lr
            if new_lr != lr:
                self._redo(lr, new_lr, params, directions)
                lr = new_lr
        self._previous = directions
        self.lrs.append(lr)

    def _redo(self, lr: float, new_lr: float, params: list, directions: list) -> None:
        factor = new_lr / lr
        i = 0
        with torch.no_grad():
            for group in self.optimizer.param_groups:
                old = float(group["lr"])
                for p in group["params"]:
                    p.sub_(directions[i], alpha=old * (factor - 1.0))
                    i += 1
        scale_lr(self.optimizer, factor)

    def _direction(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The direction u_t of the step just taken, read from the optimizer's state."""
        state = self.optimizer.state.get(p, {})
        group = next(g for g in self.optimizer.param_groups if any(q is p for q in g["params"]))
        if isinstance(self.optimizer, torch.optim.Adam):
            step = float(state["step"])
            beta1, beta2 = group["betas"]
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
            return state["exp_avg"] / (1 - beta1**step) / denom
        momentum = group.get("momentum", 0.0)
        if not momentum:
            return grad.detach().clone()
        buf = state["momentum_buffer"]
        return grad + momentum * buf if group.get("nesterov", False) else buf.clone()


def _hypergradient(problem, optimizer, lr, budget):
    opt = _optimizer(problem, optimizer, lr)
    hd = Hypergradient(opt, HYPERGRADIENT_BETAS[optimizer])
    result = run_scheduled(problem, opt, budget, hd.step)
    result.lrs = hd.lrs + result.lrs[len(hd.lrs) :]  # the rates after each redone step
    return result


def _hd_optimizers(problem: Problem, optimizer: str | None) -> str | None:
    if optimizer not in HYPERGRADIENT_BETAS:
        return f"hypergradient supports {sorted(HYPERGRADIENT_BETAS)}, not {optimizer}"
    return None


# --------------------------------------------------------------------------- the rule


class RuleController:
    """The hand-written controller a learned one must beat.

    Every `interval` steps it compares the mean loss of the block with that of the previous
    block (the first block: its last loss with its first) and the mean cosine between
    successive gradients: it multiplies the rate by `up` when the loss fell and the gradients
    agreed (cosine > 0), by `down` when the loss rose, and holds it otherwise. Block means
    rather than single losses keep minibatch noise from deciding.

    Args:
        optimizer: any torch optimizer; every group's rate is scaled, keeping their ratios.
        interval: steps per decision.
        up: factor while the loss falls and gradients agree.
        down: factor when the loss rises.
        min_lr: floor of the first group's rate.
        max_lr: ceiling of the first group's rate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        interval: int = 5,
        up: float = 2.0,
        down: float = 0.5,
        min_lr: float = MIN_LR,
        max_lr: float = MAX_LR,
    ) -> None:
        if interval < 1 or not (0 < down < 1 < up) or not (0 < min_lr < max_lr):
            raise ValueError("need interval >= 1, 0 < down < 1 < up and 0 < min_lr < max_lr")
        self.optimizer = optimizer
        self.interval = interval
        self.up, self.down = up, down
        self.min_lr, self.max_lr = min_lr, max_lr
        self._block: list[float] = []
        self._cosines: list[float] = []
        self._previous_grad: torch.Tensor | None = None
        self._previous_mean: float | None = None
        self.decisions: list[float] = []  # the factor chosen at each decision

    def step(self, loss: float) -> None:
        """Record one optimizer step; decide at the end of each block."""
        grads = [
            p.grad.detach().reshape(-1)
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        grad = torch.cat(grads).double() if grads else torch.zeros(1, dtype=torch.float64)
        if self._previous_grad is not None:
            norms = float(grad.norm() * self._previous_grad.norm())
            if norms > 0 and math.isfinite(norms):
                self._cosines.append(float(grad.dot(self._previous_grad)) / norms)
        self._previous_grad = grad
        self._block.append(float(loss))
        if len(self._block) >= self.interval:
            self._decide()

    def _decide(self) -> None:
        mean = sum(self._block) / len(self._block)
        before = self._block[0] if self._previous_mean is None else self._previous_mean
        now = self._block[-1] if self._previous_mean is None else mean
        agree = bool(self._cosines) and sum(self._cosines) / len(self._cosines) > 0
        if now > before:
            factor = self.down
        elif now < before and agree:
            factor = self.up
        else:
            factor = 1.0
        lr = reference_lr(self.optimizer)
        target = min(self.max_lr, max(self.min_lr, lr * factor))
        scale_lr(self.optimizer, target / lr)
        self.decisions.append(factor)
        self._previous_mean = mean
        self._block, self._cosines = [], []


def _rule(problem, optimizer, lr, budget):
    opt = _optimizer(problem, optimizer, lr)
    return run_scheduled(problem, opt, budget, RuleController(opt).step)


# --------------------------------------------------------------------------- graduated schedules

GRADUATED: dict[str, tuple[float, float]] = {
    "graduated_lr": (0.7071, 1.0),
    "graduated_batch": (1.0, 2.0),
    "graduated_hybrid": (0.866, 1.5),
}
"""name -> (lr factor, batch factor) per stage; each shrinks delta = lr C / sqrt(b) by 1/sqrt(2)."""
GRADUATED_STAGES = 5


def set_batch_size(problem: Problem, batch_size: int) -> None:
    """Change the minibatch size of a live minibatch data problem (from its next batch on)."""
    if not isinstance(problem, DataProblem):
        raise ValueError(f"{problem.name} does not use minibatches")
    problem.set_batch_size(batch_size)


def graduated_plan(
    budget: Budget,
    batch_size: int,
    n: int,
    lr_factor: float,
    batch_factor: float,
    stages: int = GRADUATED_STAGES,
) -> list[tuple[int, int, float]]:
    """``(steps, batch size, lr multiplier)`` for each stage of a graduated schedule.

    Each stage gets an equal share of the budget: of the examples when the budget counts
    examples (so a stage with a larger batch takes fewer steps), else of the gradient
    evaluations. Stage s uses ``lr0 * lr_factor**s`` and ``batch_size * batch_factor**s``
    (rounded, at most `n`).
    """
    plan = []
    for s in range(stages):
        batch = int(min(n, max(1, round(batch_size * batch_factor**s))))
        if budget.examples is not None:
            share = budget.examples // stages + (budget.examples % stages if s == stages - 1 else 0)
            steps = share // batch
        else:
            evals = min(v for v in (budget.grad_evals, budget.total_evals) if v is not None)
            steps = evals // stages + (evals % stages if s == stages - 1 else 0)
        plan.append((steps, batch, lr_factor**s))
    return plan


class GraduatedSchedule:
    """Step hook that moves through the stages of `graduated_plan`.

    Args:
        optimizer: the optimizer whose rates are multiplied (every group, ratios kept).
        problem: the minibatch problem whose batch size changes.
        plan: the output of `graduated_plan`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, problem: Problem, plan: list) -> None:
        self.optimizer = optimizer
        self.problem = problem
        self.plan = plan
        self.stage = 0
        self.steps = 0
        self._boundaries = [sum(s for s, _, _ in plan[: i + 1]) for i in range(len(plan))]
        set_batch_size(problem, plan[0][1])

    def step(self, loss: float) -> None:
        self.steps += 1
        while self.stage + 1 < len(self.plan) and self.steps >= self._boundaries[self.stage]:
            self.stage += 1
            _, batch, multiplier = self.plan[self.stage]
            previous = self.plan[self.stage - 1][2]
            scale_lr(self.optimizer, multiplier / previous)
            set_batch_size(self.problem, batch)


def _graduated(name: str) -> MethodFn:
    lr_factor, batch_factor = GRADUATED[name]

    def run(problem, optimizer, lr, budget):
        opt = _optimizer(problem, optimizer, lr)
        plan = graduated_plan(budget, problem.batch_size, problem.n, lr_factor, batch_factor)
        schedule = GraduatedSchedule(opt, problem, plan)
        steps = sum(s for s, _, _ in plan)
        return run_scheduled(problem, opt, budget, schedule.step, steps=steps)

    return run


def _minibatch(problem: Problem, optimizer: str | None) -> str | None:
    return None if problem.stochastic else "needs minibatches"


# --------------------------------------------------------------------------- LR-free optimizers


def _lrfree_optimizer(name: str, problem: Problem, optimizer: str | None, lr: float | None):
    params = problem.params
    if name == "dadapt":
        import dadaptation

        if optimizer == "adam":
            return dadaptation.DAdaptAdam(params, lr=1.0)
        return dadaptation.DAdaptSGD(params, lr=1.0, momentum=0.9 if optimizer == "momentum" else 0)
    if name == "prodigy":
        import prodigyopt

        return prodigyopt.Prodigy(params, lr=1.0)
    if name == "schedulefree":
        import schedulefree

        if optimizer == "adam":
            return schedulefree.AdamWScheduleFree(params, lr=lr, weight_decay=0.0)
        return schedulefree.SGDScheduleFree(params, lr=lr, momentum=0.9)
    if name == "dog":
        import dog

        return dog.DoG(params)
    raise ValueError(f"unknown learning-rate-free optimizer {name!r}")


def _effective_lr(optimizer: torch.optim.Optimizer) -> float:
    """The rate a step used: lr x d for D-Adaptation and Prodigy, eta for DoG."""
    group = optimizer.param_groups[0]
    if "d" in group:
        return float(group["lr"]) * float(group["d"])
    if "eta" in group:
        eta = group["eta"]
        return float(eta[0] if isinstance(eta, (list, tuple)) else eta)
    return float(group["lr"])


def _lrfree(name: str) -> MethodFn:
    def run(problem, optimizer, lr, budget):
        opt = _lrfree_optimizer(name, problem, optimizer, lr)
        if hasattr(opt, "train"):  # Schedule-Free steps at y and must be told so
            opt.train()
        result = run_scheduled(problem, opt, budget, lr_reader=_effective_lr)
        if hasattr(opt, "eval") and not result.diverged:
            opt.eval()  # Schedule-Free's answer is the averaged point x, not y
            result.final_loss = problem.loss()
            result.diverged = not math.isfinite(result.final_loss)
        return result

    return run


_LRFREE_PACKAGES = {
    "dadapt": "dadaptation",
    "prodigy": "prodigyopt",
    "schedulefree": "schedulefree",
    "dog": "dog",
}
_LRFREE_OPTIMIZERS = {
    "dadapt": ("sgd", "momentum", "adam"),
    "schedulefree": ("sgd", "momentum", "adam"),
}


def _lrfree_applies(name: str) -> Callable[[Problem, str | None], str | None]:
    def applies(problem: Problem, optimizer: str | None) -> str | None:
        if importlib.util.find_spec(_LRFREE_PACKAGES[name]) is None:
            return f"needs the {_LRFREE_PACKAGES[name]} package (pip install 'qlr[lrfree]')"
        allowed = _LRFREE_OPTIMIZERS.get(name)
        if allowed is not None and optimizer not in allowed:
            return f"{name} has variants for {list(allowed)}, not {optimizer}"
        return None

    return applies


# --------------------------------------------------------------------------- learned policies


def _policy(policy: str | Policy, hold_batch: bool = False, tell_budget: bool = False) -> MethodFn:
    def run(problem, optimizer, lr, budget):
        opt = _optimizer(problem, optimizer, lr)
        total = _steps(problem, budget) if tell_budget else None
        scheduler = make_scheduler(problem, opt, policy, hold_batch, total_steps=total)
        hook = scheduler_hook(problem, scheduler)
        batches = scheduler.policy.batch_factors is not None and problem.stochastic
        if not batches or budget.examples is None:
            return run_scheduled(problem, opt, budget, hook)
        # The batch grows: as many steps as the examples allow, counted as they are spent.
        return run_scheduled(problem, opt, budget, hook, max_examples=budget.examples)

    return run


# --------------------------------------------------------------------------- the slope rule

SLOPE_RULE_ARGS: dict[str, type] = {
    "raise_above": float,
    "lower_below": float,
    "up": float,
    "down": float,
    "interval": int,
}
"""Arguments of `qlr.rules.slope_rule` that ``slope_rule:key=value,...`` may set."""


def _slope_rule_method(name: str, kwargs: dict) -> Method:
    """`qlr.rules.slope_rule` deployed through `QLRScheduler`, like a learned policy."""
    from qlr.rules import slope_rule

    rule = slope_rule(**kwargs)
    up, down = rule.action_factors[2], rule.action_factors[0]
    extra = rule.metadata.extra
    return Method(
        name,
        _policy(rule),
        f"slope rule: x{up:.3g} when r > {extra['raise_above']:g}, x{down:.3g} when r < "
        f"{extra['lower_below']:g}, else hold; k={rule.decision_interval}",
    )


def _parse_slope_rule(name: str) -> Method:
    """``slope_rule:raise_above=0.3,up=2``: the slope rule with other thresholds or factors."""
    spec = name.split(":", 1)[1]
    kwargs: dict[str, float | int] = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in SLOPE_RULE_ARGS or not value:
            raise ValueError(
                f"bad slope_rule argument {item!r} in {name!r}; use key=value with keys "
                f"{sorted(SLOPE_RULE_ARGS)}"
            )
        try:
            kwargs[key] = SLOPE_RULE_ARGS[key](value)
        except ValueError:
            raise ValueError(f"slope_rule argument {key}={value!r} is not a number") from None
    return _slope_rule_method(name, kwargs)


# --------------------------------------------------------------------------- the registry


def _registry() -> dict[str, Method]:
    ls = linesearch

    def search(fn):
        return lambda problem, optimizer, lr, budget: fn(problem, lr, budget)

    methods = [
        Method("constant", _constant, "the initial rate throughout"),
        Method("step", _step_lr, "StepLR: x0.1 after each third of the budget"),
        Method("cosine", _cosine, "cosine annealing to 0 over the budget"),
        Method("linear", _linear, "linear decay to 0 over the budget"),
        Method("wsd", _wsd, "warmup 5 %, hold, linear decay to 0 over the last 20 %"),
        Method(
            "oracle_cosine",
            _oracle_cosine,
            "reference: cosine to 0 from the best of 13 peak rates in hindsight",
            uses_lr=False,
        ),
        Method("plateau", _plateau, "ReduceLROnPlateau on the step loss (x0.1, patience 10)"),
        Method(
            "armijo",
            search(ls.armijo),
            "steepest descent + Armijo backtracking (c1 1e-4)",
            uses_optimizer=False,
            charges_trials=True,
            applies=_deterministic,
        ),
        Method(
            "wolfe",
            search(ls.wolfe),
            "steepest descent + strong Wolfe search (c1 1e-4, c2 0.9)",
            uses_optimizer=False,
            charges_trials=True,
            applies=_deterministic,
        ),
        Method(
            "nonmonotone",
            search(ls.nonmonotone),
            "steepest descent + GLL nonmonotone search (M 10)",
            uses_optimizer=False,
            charges_trials=True,
            applies=_deterministic,
        ),
        Method(
            "newton",
            lambda problem, optimizer, lr, budget: ls.newton(problem, budget),
            "damped Newton (reference; Hessians not charged)",
            uses_optimizer=False,
            uses_lr=False,
            charges_trials=True,
            applies=_small_analytic,
        ),
        Method(
            "hypergradient",
            _hypergradient,
            "SGD-HD / Adam-HD (beta 1e-3 / 1e-7)",
            applies=_hd_optimizers,
        ),
        Method("rule", _rule, "x2 on falling loss + agreeing gradients, x0.5 on rising; k=5"),
        _slope_rule_method("slope_rule", {}),
        *(
            Method(name, _graduated(name), f"lr x{lr_f}, batch x{b_f} per 5th", applies=_minibatch)
            for name, (lr_f, b_f) in GRADUATED.items()
        ),
        Method(
            "dadapt",
            _lrfree("dadapt"),
            "D-Adaptation (SGD or Adam variant)",
            uses_lr=False,
            applies=_lrfree_applies("dadapt"),
        ),
        Method(
            "prodigy",
            _lrfree("prodigy"),
            "Prodigy",
            uses_optimizer=False,
            uses_lr=False,
            applies=_lrfree_applies("prodigy"),
        ),
        Method(
            "schedulefree",
            _lrfree("schedulefree"),
            "Schedule-Free SGD / AdamW",
            applies=_lrfree_applies("schedulefree"),
        ),
        Method(
            "dog",
            _lrfree("dog"),
            "DoG",
            uses_optimizer=False,
            uses_lr=False,
            applies=_lrfree_applies("dog"),
        ),
        Method("default", _policy("default"), "QLRScheduler with the shipped policy"),
        Method(
            "default_budget",
            _policy("default", tell_budget=True),
            "QLRScheduler with the shipped policy, told the budget (total_steps)",
        ),
        Method(
            "noise",
            _policy("noise"),
            "QLRScheduler with the shipped noise-level policy (rate and batch size)",
        ),
        Method(
            "noise_hold_batch",
            _policy("noise", hold_batch=True),
            "the noise-level policy with its batch held at the start (what batch actions add)",
        ),
        Method(
            "teacher",
            teacher.run_teacher,
            "reference: lookahead over x0.5..x2 held to the end, k=5; its copies' evaluations "
            "(~5 x remaining steps per decision) are reported, not charged",
        ),
    ]
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _registry()
"""Every named method; ``policy:PATH`` names are made on demand by `get_method`."""


def get_method(name: str) -> Method:
    """The method called `name`: a key of `METHODS` or ``policy:PATH`` for a policy file.

    Raises:
        ValueError: on an unknown name, listing the valid ones.
    """
    if name in METHODS:
        return METHODS[name]
    if name.startswith("policy:") and len(name) > len("policy:"):
        path = name.split(":", 1)[1]
        return Method(name, _policy(path), f"QLRScheduler with {path}")
    if name.startswith("policy_budget:") and len(name) > len("policy_budget:"):
        path = name.split(":", 1)[1]
        return Method(name, _policy(path, tell_budget=True), f"QLRScheduler with {path}, budget")
    if name.startswith("slope_rule:"):
        return _parse_slope_rule(name)
    if name.startswith("teacher:"):
        horizon = name.split(":", 1)[1]
        if not horizon.isdigit() or int(horizon) < 1:
            raise ValueError(f"teacher:H needs a positive number of steps H, got {name!r}")
        return replace(
            METHODS["teacher"],
            name=name,
            run=functools.partial(teacher.run_teacher, horizon=int(horizon)),
            description=f"reference: lookahead over x0.5..x2 held {horizon} steps ahead, k=5; "
            "its copies' evaluations are reported, not charged",
        )
    raise ValueError(
        f"unknown method {name!r}; valid: {', '.join(METHODS)}, slope_rule:KEY=VALUE,..., "
        "teacher:H or policy:PATH (a policy file)"
    )
