"""The registry of methods a learned learning-rate controller is compared with, by name.

This is the one place a method is named: `get_method` turns a name from a suite file, from
``qlr compare --methods`` or from ``qlr evaluate`` (``constant``, ``policy:PATH``,
``teacher:H``, ``slope_rule:KEY=VALUE,...``) into a `qlr.agents.bench.methods.Method`, whose
``run(problem, optimizer, lr, budget)`` trains a fresh problem instance under a `Budget` and
returns a `MethodResult`. Methods that are "an optimizer plus a hook after each step" all go
through `qlr.agents.bench.methods.run_scheduled` (`qlr.envs.run.run_inner`, the loop
`QLRScheduler` is scored in); line searches and Newton's method evaluate trial points and have
their own loops in `qlr.agents.bench.linesearch`. The torch schedules, the learning-rate-free
optimizers and the policies are defined here; the hand-written controllers have modules of their
own (`qlr.agents.bench.hypergradient`, `qlr.agents.bench.rule_controller`,
`qlr.agents.bench.graduated`), as has the lookahead teacher (`qlr.agents.bench.teacher`).

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
                       a budget in examples alone), keeps the best; copies cost ~5 x remaining steps
                       per decision, reported, not charged
=====================  ========================================================================

The line searches, Newton and the graduated schedules only
apply to some problems (deterministic, analytic, minibatch); `Method.not_applicable` says why.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from dataclasses import replace

import torch

from qlr.agents.bench import linesearch, teacher
from qlr.agents.bench.graduated import GRADUATED, graduated_method, needs_minibatches
from qlr.agents.bench.hypergradient import hypergradient_applies, run_hypergradient
from qlr.agents.bench.methods import (
    Method,
    MethodFn,
    budget_steps,
    new_optimizer,
    run_scheduled,
)
from qlr.agents.bench.rule_controller import run_rule
from qlr.envs.problems import Problem, VectorProblem
from qlr.envs.run import make_scheduler, scheduler_hook
from qlr.envs.snapshot import clone_run
from qlr.policy import Policy
from qlr.rules import slope_rule

__all__ = [
    "METHODS",
    "ORACLE_COSINE_GRID",
    "SLOPE_RULE_ARGS",
    "get_method",
    "missing_package",
    "wsd_factor",
]

# --------------------------------------------------------------------------- torch schedules


def _constant(problem, optimizer, lr, budget):
    return run_scheduled(problem, new_optimizer(problem, optimizer, lr), budget)


def _step_lr(problem, optimizer, lr, budget):
    opt = new_optimizer(problem, optimizer, lr)
    third = max(1, math.ceil(budget_steps(problem, budget) / 3))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=third, gamma=0.1)
    return run_scheduled(problem, opt, budget, lambda loss: sched.step())


def _cosine(problem, optimizer, lr, budget):
    opt = new_optimizer(problem, optimizer, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(1, budget_steps(problem, budget))
    )
    return run_scheduled(problem, opt, budget, lambda loss: sched.step())


def _linear(problem, optimizer, lr, budget):
    opt = new_optimizer(problem, optimizer, lr)
    steps = max(1, budget_steps(problem, budget))
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
    opt = new_optimizer(problem, optimizer, lr)
    steps = max(1, budget_steps(problem, budget))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: wsd_factor(t, steps))
    return run_scheduled(problem, opt, budget, lambda loss: sched.step())


ORACLE_COSINE_GRID = tuple(float(x) for x in torch.logspace(-5, 1, 13).tolist())
"""The peak rates `oracle_cosine` tries: half-decade steps from 1e-5 to 10."""


def _oracle_cosine(problem, optimizer, lr, budget):
    """Cosine decay to zero from the best peak rate in hindsight: a reference line."""
    best, best_loss = ORACLE_COSINE_GRID[0], math.inf
    probe = new_optimizer(problem, optimizer, best)
    for peak in ORACLE_COSINE_GRID:  # on copies: the run itself is the winner's, below
        copy, _, _ = clone_run(problem, probe)
        result = _cosine(copy, optimizer, peak, budget)
        if not result.diverged and result.final_loss < best_loss:
            best, best_loss = peak, result.final_loss
    return _cosine(problem, optimizer, best, budget)


def _plateau(problem, optimizer, lr, budget):
    opt = new_optimizer(problem, optimizer, lr)
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


# --------------------------------------------------------------------------- LR-free optimizers


def _lrfree_optimizer(name: str, problem: Problem, optimizer: str | None, lr: float | None):
    # Optional packages (qlr[lrfree]): each imported only when its method runs.
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


def missing_package(name: str) -> str | None:
    """Why method `name` cannot run in this environment (its optional package is not
    installed), or None: a front end that runs it everywhere asks once, before any run."""
    package = _LRFREE_PACKAGES.get(name)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"needs the {package} package (pip install 'qlr[lrfree]')"


def _lrfree_applies(name: str) -> Callable[[Problem, str | None], str | None]:
    def applies(problem: Problem, optimizer: str | None) -> str | None:
        why = missing_package(name)
        if why is not None:
            return why
        allowed = _LRFREE_OPTIMIZERS.get(name)
        if allowed is not None and optimizer not in allowed:
            return f"{name} has variants for {list(allowed)}, not {optimizer}"
        return None

    return applies


# --------------------------------------------------------------------------- learned policies


def _policy(policy: str | Policy, hold_batch: bool = False, tell_budget: bool = False) -> MethodFn:
    def run(problem, optimizer, lr, budget):
        opt = new_optimizer(problem, optimizer, lr)
        total = budget_steps(problem, budget) if tell_budget else None
        scheduler = make_scheduler(problem, opt, policy, hold_batch, total_steps=total)
        hook = scheduler_hook(problem, scheduler)
        batches = scheduler.policy.batch_factors is not None and problem.stochastic
        # With its rollback guard the scheduler can bring a diverging run back, as in a
        # user's loop: the run goes on and is judged by its final loss.
        stop = not scheduler.rolls_back
        if not batches or budget.examples is None:
            return run_scheduled(problem, opt, budget, hook, stop_at_divergence=stop)
        # The batch grows: as many steps as the examples allow, counted as they are spent.
        return run_scheduled(
            problem, opt, budget, hook, max_examples=budget.examples, stop_at_divergence=stop
        )

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
            raise ValueError(
                f"slope_rule argument {key}={value!r} in {name!r} is not a number"
            ) from None
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
            run_hypergradient,
            "SGD-HD / Adam-HD (beta 1e-3 / 1e-7)",
            applies=hypergradient_applies,
        ),
        Method("rule", run_rule, "x2 on falling loss + agreeing gradients, x0.5 on rising; k=5"),
        _slope_rule_method("slope_rule", {}),
        *(
            Method(
                name,
                graduated_method(name),
                f"lr x{lr_f}, batch x{b_f} per 5th",
                applies=needs_minibatches,
            )
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
    """The method called `name`; the one parser of method names, for every benchmark command.

    `name` is a key of `METHODS`, or one of the names made on demand: ``policy:PATH`` and
    ``policy_budget:PATH`` (a policy file, the second told the budget), ``teacher:H`` (the
    teacher looking H steps ahead) and ``slope_rule:KEY=VALUE,...`` (see `SLOPE_RULE_ARGS`).

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
