"""Shared fixtures."""

import pytest
import torch

from qlr.features import FEATURES_V2
from qlr.policy import Policy, PolicyMetadata


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
