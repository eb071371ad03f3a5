"""The scheduler in a loop that must not wait for the device: host reads, tensor rates, compile.

On an accelerator every read of a tensor to the host waits for the device to finish its queue.
Between decisions `QLRScheduler.step(loss)` reads one thing only: the values of the step before
(its loss and gradient statistics), which on CUDA were copied to pinned memory without blocking
a step earlier. These tests count the reads on the CPU, where they can be intercepted.
"""

import math

import numpy as np
import pytest
import torch
from conftest import build_policy

from qlr import QLRScheduler
from qlr.features import FEATURE_NAMES, FEATURES_V3, GRADIENT_FEATURES, FeatureTracker

# Every way a tensor's value reaches Python.
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy")
UPDATE = tuple(n for n in FEATURE_NAMES if n not in GRADIENT_FEATURES and n != "batch_growth")
FEATURE_SETS = {
    "gradient (v2)": None,  # the policy's default: FEATURES_V2
    "update (v4/v5)": UPDATE,
    "dense (grad_noise)": FEATURES_V3[:12],
    "all": FEATURE_NAMES,
}


class ReadLog:
    """Records every read of a tensor's value while `active`, with what it returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.active = False
        self.reads: list[tuple[str, object]] = []
        for name in READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(name, original))

    def _counting(self, name, original):
        def read(tensor, *args, **kwargs):
            result = original(tensor, *args, **kwargs)
            if self.active:  # a copy: the scheduler may consume the list it gets
                self.reads.append((name, list(result) if isinstance(result, list) else result))
            return result

        return read

    def during(self, call) -> list[tuple[str, object]]:
        self.reads, self.active = [], True
        try:
            call()
        finally:
            self.active = False
        return self.reads


def _mlp_loop(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 6, generator=gen), torch.randn(64, 1, generator=gen)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def loss_of_step(optimizer):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return model, loss_of_step


@pytest.mark.parametrize("features", list(FEATURE_SETS.values()), ids=list(FEATURE_SETS))
def test_between_decisions_only_the_previous_step_is_read(monkeypatch, features):
    """A tensor loss: no read at all of this step's values until a decision needs them."""
    kwargs = {} if features is None else {"features": features}
    policy = build_policy(seed=2, interval=5, spike_factor=2.0, **kwargs)
    model, loss_of_step = _mlp_loop()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = QLRScheduler(optimizer, policy=policy)
    log = ReadLog(monkeypatch)
    previous = None  # the loss of the step before, read here outside the scheduler
    for step in range(1, 31):
        loss = loss_of_step(optimizer)
        reads = log.during(lambda loss=loss: scheduler.step(loss))
        if step % 5 == 0:
            assert scheduler.decisions == step // 5  # decisions read what they need
        elif previous is None:
            assert reads == []  # the run's first step: nothing before it to read
        else:
            # One read: the step before's values, the loss last, already computed a step ago.
            assert [name for name, _ in reads] == ["tolist"], reads
            values = reads[0][1]  # a list, or the loss alone when nothing else was measured
            assert (values[-1] if isinstance(values, list) else values) == previous
        previous = None if step % 5 == 0 else loss.detach().float().item()
    assert scheduler.steps == 30


def test_a_float_loss_adds_no_read_but_the_gradient_statistics(monkeypatch):
    """With a float loss the user has paid its read; the steps with no reductions read none."""
    model, loss_of_step = _mlp_loop(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = QLRScheduler(optimizer, policy=build_policy(seed=3, interval=5))  # v2 features
    log = ReadLog(monkeypatch)
    per_step = []
    for _ in range(20):
        loss = loss_of_step(optimizer).item()
        per_step.append([name for name, _ in log.during(lambda loss=loss: scheduler.step(loss))])
    # Gradients are measured on the block's last two steps (and the run's first): the fourth
    # step's reductions are read at the fifth, which also reads its own for the decision.
    assert per_step[1:4] == [["tolist"], [], []]
    for block in range(1, 4):
        assert per_step[5 * block : 5 * block + 3] == [[], [], []]
        assert "item" not in per_step[5 * block + 3] and "__float__" not in per_step[5 * block + 3]


def test_tensor_rates_are_scaled_in_place_by_decisions_guards_and_bounds():
    model, loss_of_step = _mlp_loop(2)
    rates = [torch.tensor(0.01), torch.tensor(0.1)]
    optimizer = torch.optim.Adam(
        [{"params": model[0].parameters(), "lr": rates[0]}, {"params": model[2].parameters()}],
        lr=rates[1],
    )
    policy = build_policy(favour=2, interval=4, spike_factor=2.0)  # always doubles the rate
    scheduler = QLRScheduler(optimizer, policy=policy, max_lr=0.05)
    seen = []
    for step in range(1, 16):
        loss = loss_of_step(optimizer)
        if step == 13:
            loss = torch.tensor(math.nan)  # the non-finite guard cuts at the next step
        scheduler.step(loss)
        seen.append(scheduler.get_last_lr())
    assert all(g["lr"] is rate for g, rate in zip(optimizer.param_groups, rates, strict=True))
    first = [lrs[0] for lrs in seen]
    # Doubled at each decision (steps 4, 8), then held at the bound (12), through in-place
    # scaling; the NaN of step 13 is cut at step 14: 0.05 x 0.1.
    assert first[2:5] == pytest.approx([0.01, 0.02, 0.02])
    assert first[7:14] == pytest.approx([0.04] * 4 + [0.05, 0.05, 0.005])
    for lr0, lr1 in seen:
        assert lr1 / lr0 == pytest.approx(10.0, rel=1e-5)  # the groups keep their ratio


def _compiled_run(lr: float | torch.Tensor, backend: str, steps: int = 24):
    """A compiled forward, backward and Adam step under the scheduler; its graphs and rates."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model, _ = _mlp_loop(3)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 6, generator=gen), torch.randn(32, 1, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Random weights: over 12 decisions this policy moves the rate up and down.
    scheduler = QLRScheduler(optimizer, policy=build_policy(seed=1, interval=2))

    @torch.compile(backend=backend)
    def train_step(x, y):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    graphs, rates = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        scheduler.step(train_step(x, y))
        graphs.append(counters["stats"]["unique_graphs"])
        rates.append(scheduler.get_last_lr()[0])
    return graphs, rates, [p.detach().clone() for p in model.parameters()]


def _eager_run(steps: int = 24):
    model, loss_of_step = _mlp_loop(3)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 6, generator=gen), torch.randn(32, 1, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = QLRScheduler(optimizer, policy=build_policy(seed=1, interval=2))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step(loss)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_a_compiled_step_with_a_tensor_rate_never_recompiles_when_the_rate_moves(backend):
    """Dynamo guards on a tensor's metadata, not its value: a rate changed in place is seen by
    the compiled graph without a new one. (A float rate is a constant of the graph.)"""
    graphs, rates, params = _compiled_run(torch.tensor(0.01), backend)
    assert len(set(rates)) >= 4  # the rate moved several times
    assert graphs[-1] == graphs[1] > 0  # no graph compiled after the first steps
    # The compiled steps used every new rate: they train exactly as the eager loop does.
    for compiled, eager in zip(params, _eager_run(), strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    float_graphs, float_rates, _ = _compiled_run(0.01, backend)
    assert float_rates == pytest.approx(rates)
    assert float_graphs[-1] > float_graphs[1]  # a float rate did recompile: the count sees it


def test_a_state_dict_taken_with_a_step_queued_keeps_its_cut():
    """Saving reads and judges the queued step; the restored scheduler cuts when the original
    would have, at its next step."""
    model, loss_of_step = _mlp_loop(4)
    policy = build_policy(favour=1, interval=5, spike_factor=2.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = QLRScheduler(optimizer, policy=policy)
    for _ in range(6):
        scheduler.step(loss_of_step(optimizer))
    scheduler.step(torch.tensor(1e6))  # a spike, queued
    state = scheduler.state_dict()
    assert state["controller"]["held_cuts"] == ["spike"]
    assert optimizer.param_groups[0]["lr"] == 0.01
    restored = QLRScheduler(torch.optim.SGD(model.parameters(), lr=0.01), policy=policy)
    restored.load_state_dict(state)
    for sched in (scheduler, restored):
        sched.step(1.0)
        assert sched.get_last_lr()[0] == pytest.approx(0.01 * policy.metadata.spike_cut)
        assert sched.spike_cuts == 1
    np.testing.assert_array_equal(
        scheduler.controller.tracker.observation(), restored.controller.tracker.observation()
    )


def test_multi_tensor_reductions_give_the_same_features():
    """On accelerators norms come from one multi-tensor kernel and the update chain moves its
    buffer with foreach ops; asked for on the CPU, that path agrees with the per-parameter one."""

    def observations(foreach):
        model, loss_of_step = _mlp_loop(5)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        tracker = FeatureTracker(interval=5, dense=True, foreach=foreach)
        params = list(model.parameters())
        seen = []
        for step in range(1, 41):
            tracker.queue(loss_of_step(optimizer), [p.grad for p in params], params)
            if step % 5 == 0:
                seen.append(tracker.observation())
        return np.array(seen)

    loop = observations(foreach=False)
    np.testing.assert_array_equal(observations(foreach=None), loop)  # the CPU's default
    batched = observations(foreach=True)
    assert np.abs(loop).max() > 0.1  # the features are not all zero
    np.testing.assert_allclose(batched, loop, rtol=0, atol=1e-5)  # float32 sums, other order
