"""Shared fixtures and helpers."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from qlr.features import FEATURE_NAMES, FEATURES_V2, GRADIENT_FEATURES
from qlr.policy import Policy, PolicyMetadata

V4_FEATURES = [n for n in FEATURE_NAMES if n not in GRADIENT_FEATURES and n != "batch_growth"]
"""The version-4 features: the slope rule's ``update_slope`` among them, no gradient noise."""
RULE_ENV = {
    "problem": ["quadratic", "rosenbrock"],
    "optimizer": ["sgd", "adam"],
    "action_factors": 5,
    "features": V4_FEATURES,
    "horizon": 12,
}
"""A cheap `LearningRateEnv` the slope rule can act in: analytic families, the rule's factors."""


def build_policy(
    hidden=(16,),
    factors=(0.5, 1.0, 2.0),
    interval=5,
    seed=0,
    favour: int | None = None,
    features=FEATURES_V2,
    spike_factor: float | None = None,
    batch_factors: tuple[float, ...] | None = None,
    max_batch_growth: float | None = None,
) -> Policy:
    """A policy with random weights, or one that always picks action `favour`."""
    gen = torch.Generator().manual_seed(seed)
    n_actions = len(factors) * len(batch_factors or (1.0,))
    sizes = [len(features), *hidden, n_actions]
    layers = []
    for i in range(len(sizes) - 1):
        w = torch.randn(sizes[i + 1], sizes[i], generator=gen)
        b = torch.randn(sizes[i + 1], generator=gen)
        layers.append((w, b))
    if favour is not None:
        w, b = layers[-1]
        layers[-1] = (
            torch.zeros_like(w),
            torch.where(torch.arange(n_actions) == favour, 1.0, 0.0),
        )
    meta = PolicyMetadata(
        action_factors=factors,
        decision_interval=interval,
        hidden_sizes=hidden,
        feature_names=tuple(features),
        spike_factor=spike_factor,
        batch_factors=batch_factors,
        max_batch_growth=max_batch_growth,
    )
    return Policy(layers, meta)


@pytest.fixture
def make_policy():
    """Factory fixture: make_policy(favour=2) always raises, make_policy(seed=3) is random."""
    return build_policy


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Every test runs torch on one thread."""
    # Tiny tensors gain nothing from intra-op threads, and on a busy machine OpenMP workers
    # make every matmul wait for a descheduled thread (measured: 20 small-MLP steps took
    # 2 s with 2 threads under load, 10 ms with 1).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class DecisionAudit:
    """Watches a `QLRScheduler` step by step; call it after every ``scheduler.step(loss)``.

    At every decision it checks that the rate (and, for a policy with batch actions, the batch
    size) moved by the factors of the action the policy chooses for the observation the
    scheduler saw (its q-values' first, or the slope rule's where a deferring policy is unsure),
    within the scheduler's bounds. A scheduler that ignored its
    policy, or never moved the rate, fails it.
    """

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.lrs = [scheduler.optimizer.param_groups[0]["lr"]]
        self.batch_sizes = [scheduler.batch_size]
        self.decisions = scheduler.decisions
        self.rollbacks = scheduler.rollbacks
        self.checked = 0  # decisions checked (those on a step a guard also cut are skipped)

    def __call__(self) -> None:
        sched, controller = self.scheduler, self.scheduler.controller
        lr, batch = sched.optimizer.param_groups[0]["lr"], sched.batch_size
        rolled_back = sched.rollbacks > self.rollbacks  # the guard, not the policy, set the rate
        self.rollbacks = sched.rollbacks
        if sched.decisions > self.decisions and not controller.last_cuts and not rolled_back:
            action = sched.policy.act(sched.last_observation)
            assert sched.last_action == action
            per_rate = len(sched.policy.batch_factors or (1.0,))
            factor = sched.policy.action_factors[action // per_rate]
            expected = controller.clamp(self.lrs[-1] * factor)  # bounds and any ceiling
            assert lr == pytest.approx(expected, rel=1e-6), (action, self.lrs[-1], lr)
            if sched.policy.batch_factors is not None:
                grown = round(self.batch_sizes[-1] * sched.policy.batch_factors[action % per_rate])
                low, high = controller.min_batch_size, controller.max_batch_size
                assert batch == min(high, max(low, grown)), (action, self.batch_sizes[-1], batch)
            self.checked += 1
        self.decisions = sched.decisions
        self.lrs.append(lr)
        self.batch_sizes.append(batch)

    @property
    def rate_moved(self) -> bool:
        return len(set(self.lrs)) > 1


def load_experiment(name: str):
    """An experiments/ script as a module (experiments/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being made.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module
