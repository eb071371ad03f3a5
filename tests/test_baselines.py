"""Baselines on problems with known answers: line-search conditions, Newton, hypergradient,
graduated schedules, the rule controller, and honest budget accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qlr import QLRScheduler
from qlr.agents.bench import linesearch
from qlr.agents.bench.baselines import METHODS, get_method
from qlr.agents.bench.budget import Budget
from qlr.agents.bench.graduated import (
    GRADUATED,
    GRADUATED_STAGES,
    GraduatedSchedule,
    graduated_plan,
)
from qlr.agents.bench.hypergradient import Hypergradient
from qlr.agents.bench.rule_controller import RuleController
from qlr.agents.bench.runs import build_problem
from qlr.envs.problems import FAMILIES, sample_least_squares, sample_quadratic, sample_rosenbrock
from qlr.policy import save_policy

C1, C2 = 1e-4, 0.9


def quadratic(seed: int = 0, dim: int = 8, cond: float = 100.0):
    return sample_quadratic(np.random.default_rng(seed), dim=dim, cond=cond)


def rosenbrock(seed: int = 0, dim: int = 4):
    return sample_rosenbrock(np.random.default_rng(seed), dim=dim)


def minibatch(seed: int = 0, n: int = 512, batch_size: int = 16):
    return sample_least_squares(np.random.default_rng(seed), dim=5, n=n, batch_size=batch_size)


def value_and_grad(problem, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The objective and gradient at `x`, straight from the problem's formula (no counters)."""
    value, grad = problem._value_and_grad(x)
    return float(value), grad.double()


def replay(make_problem, result):
    """Yield (f, g, alpha, f_new, g_new) for every accepted steepest-descent step of `result`.

    The trajectory is rebuilt from the accepted step lengths on a fresh copy of the problem
    (with the search's own float32 arithmetic, so it is the same trajectory), and the conditions
    are checked against the objective itself rather than the search's records.
    """
    problem = make_problem()
    x = problem.x.detach().clone()
    for step in result.extra["steps"]:
        value, grad = problem._value_and_grad(x)
        x_new = x + step.alpha * -grad
        value_new, grad_new = problem._value_and_grad(x_new)
        yield float(value), grad.double(), step.alpha, float(value_new), grad_new.double()
        x = x_new


# ---------------------------------------------------------------------------------- line searches
def test_armijo_accepts_only_steps_with_sufficient_decrease() -> None:
    result = linesearch.armijo(quadratic(), 1.0, Budget(grad_evals=60), c1=C1)
    steps = result.extra["steps"]
    assert len(steps) >= 20
    assert sum(s.trials for s in steps) > len(steps)  # it did backtrack
    for f, g, alpha, f_new, _ in replay(quadratic, result):
        slope = -float(g.dot(g))
        assert f_new <= f + C1 * alpha * slope + 1e-6 * abs(f)
    assert result.final_loss < 1e-2 * result.initial_loss


def test_wolfe_steps_satisfy_both_wolfe_conditions() -> None:
    for make in (quadratic, rosenbrock):
        result = linesearch.wolfe(make(), 1e-3, Budget(total_evals=300), c1=C1, c2=C2)
        steps = result.extra["steps"]
        assert len(steps) >= 10 and all(s.wolfe for s in steps)
        for f, g, alpha, f_new, g_new in replay(make, result):
            slope = -float(g.dot(g))
            assert f_new <= f + C1 * alpha * slope + 1e-6 * abs(f)
            new_slope = -float(g_new.dot(g))
            assert abs(new_slope) <= C2 * abs(slope) * (1 + 1e-3)
        assert result.final_loss < result.initial_loss


def test_nonmonotone_reference_is_the_max_of_the_last_m() -> None:
    assert linesearch.nonmonotone_reference([9.0, 1.0, 5.0, 2.0, 3.0], memory=3) == 5.0
    assert linesearch.nonmonotone_reference([9.0, 1.0, 5.0, 2.0, 3.0], memory=10) == 9.0
    assert linesearch.nonmonotone_reference([4.0], memory=10) == 4.0


def test_nonmonotone_accepts_against_the_max_of_the_last_m_losses() -> None:
    memory = 10
    result = linesearch.nonmonotone(rosenbrock(), 1e-3, Budget(total_evals=400), memory=memory)
    history: list[float] = []
    rises = 0
    for f, g, alpha, f_new, _ in replay(rosenbrock, result):
        history.append(f)
        slope = -float(g.dot(g))
        reference = max(history[-memory:])
        assert f_new <= reference + C1 * alpha * slope + 1e-5 * abs(reference)
        rises += f_new > f + C1 * alpha * slope  # a step plain Armijo would have refused
    assert rises > 0
    # and the records agree with the replay about what the reference was
    assert all(s.reference >= s.f_prev for s in result.extra["steps"])


def test_line_searches_refuse_minibatch_problems() -> None:
    with pytest.raises(ValueError, match="deterministic"):
        linesearch.armijo(minibatch(), 1e-2, Budget(grad_evals=10))
    method = get_method("wolfe")
    assert method.not_applicable(minibatch(), None) is not None
    assert method.not_applicable(quadratic(), None) is None


# ---------------------------------------------------------------------------------- Newton
def test_newton_solves_a_quadratic_in_one_step() -> None:
    problem = quadratic(dim=10, cond=50.0)
    result = linesearch.newton(problem, Budget(total_evals=20))
    first = result.extra["steps"][0]
    assert first.alpha == 1.0 and first.trials == 1  # the full Newton step, accepted at once
    assert result.losses[1] <= 1e-9 * result.losses[0]
    assert result.final_loss <= 1e-9 * result.initial_loss
    assert result.extra["hessian_evals"] >= 1


def test_newton_damps_an_indefinite_hessian_into_a_descent_direction() -> None:
    hessian = torch.tensor([[1.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    d = linesearch.newton_direction(hessian, grad)
    assert float(grad.dot(d)) < 0


def test_newton_is_only_for_small_analytic_problems() -> None:
    big = quadratic(dim=60)
    with pytest.raises(ValueError, match="dim <= 50"):
        linesearch.newton(big, Budget(grad_evals=5))
    assert get_method("newton").not_applicable(big, None) is not None
    assert get_method("newton").not_applicable(minibatch(), None) is not None


# ---------------------------------------------------------------------------------- hypergradient
@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
def test_hypergradient_hook_reproduces_the_papers_update_exactly(kind: str) -> None:
    """The hook redoes each step with the new rate: the iterates of SGD-HD, SGDN-HD (heavy
    ball here) and Adam-HD written out, where a_t = a_{t-1} + beta g_t . u_{t-1}."""
    beta, lr0, steps = 1e-3, 0.05, 30
    problem = quadratic(seed=3)
    optimizer = {
        "sgd": lambda p: torch.optim.SGD(p, lr=lr0),
        "momentum": lambda p: torch.optim.SGD(p, lr=lr0, momentum=0.9),
        "adam": lambda p: torch.optim.Adam(p, lr=lr0),
    }[kind](problem.params)
    hd = Hypergradient(optimizer, beta)
    for _ in range(steps):
        loss = problem.loss_and_grad()
        optimizer.step()
        hd.step(loss)

    reference = quadratic(seed=3)
    x, lr, u_prev = reference.x.detach().clone().double(), lr0, None
    m = v = buf = torch.zeros_like(x)
    for t in range(1, steps + 1):
        _, g = value_and_grad(reference, x.float())
        if u_prev is not None:
            lr = lr + beta * float(g.dot(u_prev))
        if kind == "adam":
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            u = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        elif kind == "momentum":
            buf = g.clone() if t == 1 else 0.9 * buf + g
            u = buf
        else:
            u = g
        x, u_prev = x - lr * u, u
    assert hd.lrs[-1] == pytest.approx(lr, rel=1e-5)
    assert torch.allclose(problem.x.detach().double(), x, rtol=1e-4, atol=1e-5)
    assert abs(lr - lr0) > 1e-4  # the rate did move


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_hypergradient_never_sets_a_negative_rate(optimizer: str) -> None:
    # A huge beta with a rate far too large makes successive gradients point against each
    # other: without the clamp the very next update would drive the rate below zero.
    problem = quadratic(seed=1)
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}.get(optimizer, torch.optim.SGD)
    kwargs = {"momentum": 0.9} if optimizer == "momentum" else {}
    torch_opt = opt(problem.params, lr=5.0, **kwargs)
    hd = Hypergradient(torch_opt, beta=10.0, min_lr=1e-8)
    for _ in range(40):
        loss = problem.loss_and_grad()
        torch_opt.step()
        hd.step(loss)
        assert torch_opt.param_groups[0]["lr"] > 0
    assert min(hd.lrs) == pytest.approx(1e-8)  # the clamp was needed
    assert all(lr > 0 for lr in hd.lrs)


def test_hypergradient_applies_only_to_its_optimizers() -> None:
    method = get_method("hypergradient")
    assert method.not_applicable(quadratic(), "adagrad") is not None
    assert method.not_applicable(quadratic(), "adam") is None


# ---------------------------------------------------------------------------------- graduated
@pytest.mark.parametrize(
    ("name", "lr_factor", "batch_factor"),
    [
        ("graduated_lr", 0.7071, 1.0),
        ("graduated_batch", 1.0, 2.0),
        ("graduated_hybrid", 0.866, 1.5),
    ],
)
def test_graduated_schedules_change_rate_and_batch_at_each_fifth(
    name: str, lr_factor: float, batch_factor: float
) -> None:
    budget = Budget(examples=5 * 640)
    plan = graduated_plan(budget, 16, 512, lr_factor, batch_factor)
    batches = [b for _, b, _ in plan]
    assert batches == [round(16 * batch_factor**s) for s in range(5)]
    assert [steps for steps, _, _ in plan] == [640 // b for b in batches]

    problem = minibatch()
    result = get_method(name).run(problem, "sgd", 0.01, budget)
    per_step = np.diff([0, *result.example_trace])  # examples each step used = its batch size
    lrs = np.array(result.lrs)
    start = 0
    for s, (steps, batch, _) in enumerate(plan):
        stage = slice(start, start + steps)
        assert (per_step[stage] == batch).all(), f"stage {s} batch"
        assert np.allclose(lrs[stage], 0.01 * lr_factor**s), f"stage {s} rate"
        start += steps
    assert start == len(result.losses)
    assert result.examples_seen <= budget.examples


@pytest.mark.parametrize("name", sorted(GRADUATED))
def test_graduated_schedule_shrinks_delta_by_one_over_sqrt2_per_stage(name: str) -> None:
    # delta = lr C / sqrt(batch): read the rate and the batch each step of a real run used.
    budget = Budget(examples=5 * 640)
    result = get_method(name).run(minibatch(), "sgd", 0.01, budget)
    per_step = np.diff([0, *result.example_trace])  # examples each step used = its batch size
    delta = np.array(result.lrs) / np.sqrt(per_step)
    stages = np.flatnonzero(np.diff(delta)) + 1  # the steps where delta changed
    assert len(stages) == GRADUATED_STAGES - 1, f"{name}: delta changed at steps {stages}"
    levels = [delta[0], *delta[stages]]
    assert np.allclose(np.diff(np.log(levels)), math.log(2**-0.5), rtol=2e-3), levels


def test_graduated_schedule_needs_minibatches() -> None:
    with pytest.raises(ValueError, match="minibatches"):
        GraduatedSchedule(torch.optim.SGD(quadratic().params, lr=0.1), quadratic(), [(1, 8, 1.0)])
    assert get_method("graduated_batch").not_applicable(quadratic(), "sgd") is not None


# ---------------------------------------------------------------------------------- the rule
def drive_rule(losses: list[float], grads: list[list[float]], lr: float = 0.1) -> float:
    param = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=lr)
    rule = RuleController(optimizer, interval=5)
    for loss, grad in zip(losses, grads, strict=True):
        param.grad = torch.tensor(grad)
        rule.step(loss)
    return optimizer.param_groups[0]["lr"]


def test_rule_raises_on_a_falling_loss_with_agreeing_gradients() -> None:
    assert drive_rule([5, 4, 3, 2, 1], [[1.0, 1.0]] * 5) == pytest.approx(0.2)
    # second block: mean 0.6 < previous mean 3, gradients still agree
    lr = drive_rule([5, 4, 3, 2, 1, 0.8, 0.7, 0.6, 0.5, 0.4], [[1.0, 0.5]] * 10)
    assert lr == pytest.approx(0.4)


def test_rule_lowers_on_a_rising_loss() -> None:
    assert drive_rule([1, 2, 3, 4, 5], [[1.0, 1.0]] * 5) == pytest.approx(0.05)


def test_rule_holds_when_gradients_disagree() -> None:
    alternating = [[1.0, 1.0], [-1.0, -1.0]] * 2 + [[1.0, 1.0]]
    assert drive_rule([5, 4, 3, 2, 1], alternating) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------- budgets
PROBLEMS = {"quadratic": quadratic, "rosenbrock": rosenbrock, "minibatch": minibatch}


@pytest.mark.parametrize("problem_name", list(PROBLEMS))
@pytest.mark.parametrize(
    "budget",
    [Budget(grad_evals=50), Budget(total_evals=50), Budget(examples=1600)],
    ids=["grad", "grad+func", "examples"],
)
def test_no_method_exceeds_its_budget(problem_name: str, budget: Budget, tmp_path) -> None:
    from conftest import build_policy

    policy = save_policy(build_policy(seed=2), tmp_path / "random.qlr")
    names = [m for m in METHODS if m != "default"] + [f"policy:{policy}"]
    for name in names:
        method = get_method(name)
        problem = PROBLEMS[problem_name]()
        optimizer = "sgd" if method.uses_optimizer else None
        if method.not_applicable(problem, optimizer) is not None:
            continue
        if budget.examples is not None and not problem.stochastic:
            with pytest.raises(ValueError, match="without data"):  # not an endless run
                method.run(problem, optimizer, 1e-3, budget)
            continue
        result = method.run(problem, optimizer, 1e-3, budget)
        total = result.grad_evals + result.func_evals
        assert budget.grad_evals is None or result.grad_evals <= budget.grad_evals, name
        assert budget.total_evals is None or total <= budget.total_evals, name
        assert budget.examples is None or result.examples_seen <= budget.examples, name
        # every evaluation the method made is charged: only the initial and final losses
        # (bookkeeping, one function evaluation each unless the run diverged) are not, and
        # Schedule-Free's final loss is measured again at its averaged point
        bookkeeping = (1 if result.diverged else 2) + (name == "schedulefree")
        assert problem.grad_evals == result.grad_evals, name
        assert problem.func_evals == result.func_evals + bookkeeping, name
        if len(result.grad_trace):
            assert result.grad_trace[-1] <= result.grad_evals, name
            assert np.all(np.diff(result.grad_trace) >= 0), name


def test_line_searches_pay_for_trial_points() -> None:
    for search in (linesearch.armijo, linesearch.wolfe, linesearch.nonmonotone):
        result = search(quadratic(), 1.0, Budget(total_evals=60))
        trials = sum(s.trials for s in result.extra["steps"])
        assert result.func_evals >= trials > 0
        assert result.grad_evals + result.func_evals <= 60
        # under a gradient budget the same search takes more steps: trials are then free
        free = search(quadratic(), 1.0, Budget(grad_evals=60))
        assert free.grad_evals > result.grad_evals and free.func_evals > result.func_evals


def test_budget_needs_a_limit() -> None:
    with pytest.raises(ValueError, match="needs at least one of grad_evals, total_evals, examples"):
        Budget()
    with pytest.raises(ValueError, match="Budget.grad_evals must be positive, got 0"):
        Budget(grad_evals=0)
    assert Budget(grad_evals=10, examples=160).steps(32) == 5


# ---------------------------------------------------------------------------------- policies
def test_policy_file_method_runs_the_scheduler(tmp_path) -> None:
    from conftest import build_policy

    path = save_policy(build_policy(favour=2), tmp_path / "raise.qlr")  # always x2
    result = get_method(f"policy:{path}").run(quadratic(), "sgd", 1e-6, Budget(grad_evals=20))
    assert result.lrs[-1] == pytest.approx(1e-6 * 2**3)  # decisions after steps 5, 10, 15


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="armijo"):
        get_method("armijo2")


# ---------------------------------------------------------------------------------- LR-free
@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("dadapt", "dadaptation"),
        ("prodigy", "prodigyopt"),
        ("schedulefree", "schedulefree"),
        ("dog", "dog"),
    ],
)
def test_lr_free_optimizers_run_and_report_their_effective_rate(name: str, package: str) -> None:
    pytest.importorskip(package)
    method = get_method(name)
    optimizer = "sgd" if method.uses_optimizer else None
    problem = FAMILIES["quadratic"](np.random.default_rng(0), dim=10, cond=10.0)
    result = method.run(problem, optimizer, 1e-2 if method.uses_lr else None, Budget(grad_evals=60))
    assert not result.diverged and result.final_loss < result.initial_loss
    if name in ("dadapt", "prodigy", "dog"):  # lr is a multiplier: the rate used must move
        assert len(set(np.round(result.lrs, 12))) > 1
    if name == "schedulefree":  # the final loss is read at the averaged point x
        assert result.final_loss == pytest.approx(problem.loss())


def test_linear_decay_and_warmup_stable_decay_follow_their_shapes() -> None:
    from qlr.agents.bench.baselines import wsd_factor

    shape = [wsd_factor(t, 100) for t in range(100)]
    assert shape[0] == pytest.approx(0.2) and shape[4] == 1.0  # 5 warmup steps
    assert shape[5:80] == [1.0] * 75 and shape[80] == 1.0 and shape[99] == pytest.approx(0.05)
    problem = build_problem("quadratic", {"dim": 6, "cond": 10.0}, 5)
    result = get_method("linear").run(problem, "sgd", 0.1, Budget(grad_evals=50))
    assert result.lrs[0] == pytest.approx(0.1) and result.lrs[-1] == pytest.approx(0.1 / 50)
    wsd = get_method("wsd").run(
        build_problem("quadratic", {"dim": 6, "cond": 10.0}, 5), "sgd", 0.1, Budget(grad_evals=100)
    )
    assert max(wsd.lrs) == pytest.approx(0.1) and wsd.lrs[0] < wsd.lrs[10]


def test_the_oracle_cosine_is_the_best_of_its_peak_rates() -> None:
    from qlr.agents.bench.baselines import ORACLE_COSINE_GRID

    budget = Budget(grad_evals=40)
    oracle = get_method("oracle_cosine")
    assert not oracle.uses_lr
    best = oracle.run(build_problem("quadratic", {"dim": 6, "cond": 10.0}, 3), "sgd", None, budget)
    finals = [
        get_method("cosine")
        .run(build_problem("quadratic", {"dim": 6, "cond": 10.0}, 3), "sgd", peak, budget)
        .final_loss
        for peak in ORACLE_COSINE_GRID
    ]
    assert best.final_loss == pytest.approx(min(f for f in finals if math.isfinite(f)))


def test_a_policy_told_the_budget_reads_its_progress(tmp_path, make_policy, monkeypatch) -> None:
    path = save_policy(
        make_policy(favour=1, interval=5, features=("loss_change_block", "progress")),
        tmp_path / "progress.qlr",
    )
    told = get_method(f"policy_budget:{path}")
    problem = build_problem("quadratic", {"dim": 6, "cond": 10.0}, 2)
    seen = []
    original = QLRScheduler._decide

    def recording(self):  # the real decision, and what it read
        original(self)
        seen.append(float(self.last_observation[1]))

    monkeypatch.setattr(QLRScheduler, "_decide", recording)
    told.run(problem, "sgd", 0.01, Budget(grad_evals=20))
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0])
