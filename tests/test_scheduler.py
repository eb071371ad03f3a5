"""QLRScheduler against real optimizers and real training steps."""

import logging
import math

import numpy as np
import pytest
import torch
from conftest import DecisionAudit

from qlr import QLRScheduler
from qlr.envs import LearningRateEnv, make_distribution, make_optimizer
from qlr.features import FEATURE_NAMES

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.01),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.001),
    "adam": lambda p: torch.optim.Adam(p, lr=0.001),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.001),
}


def regression(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen) + 0.1 * torch.randn(128, 1, generator=gen)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    torch.manual_seed(seed)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    return model, x, y


def train(model, x, y, optimizer, scheduler, steps, loss_fn=None, after_step=None, losses=None):
    lrs = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y) if loss_fn is None else loss_fn()
        loss.backward()
        optimizer.step()
        scheduler.step(loss)
        if losses is not None:
            losses.append(loss.item())
        if after_step is not None:
            after_step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def test_construction_keeps_the_learning_rate(make_policy):
    model, _, _ = regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.0123)
    sched = QLRScheduler(opt, policy=make_policy())
    assert opt.param_groups[0]["lr"] == 0.0123 and sched.get_last_lr() == [0.0123]


def test_decides_every_k_steps_by_the_policy_factor(make_policy):
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = QLRScheduler(opt, policy=make_policy(favour=2, interval=4))
    lrs = train(model, x, y, opt, sched, 12)
    assert lrs[:3] == [1e-3] * 3
    assert lrs[3] == pytest.approx(2e-3) and lrs[7] == pytest.approx(4e-3)
    assert lrs[4:7] == [lrs[3]] * 3
    assert sched.decisions == 3 and sched.last_action == 2


@pytest.mark.parametrize("favour, bound", [(2, "max_lr"), (0, "min_lr")])
def test_bounds_are_respected(make_policy, favour, bound):
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = QLRScheduler(
        opt, policy=make_policy(favour=favour, interval=1), min_lr=1e-4, max_lr=4e-3
    )
    lrs = train(model, x, y, opt, sched, 10)
    assert min(lrs) >= 1e-4 - 1e-12 and max(lrs) <= 4e-3 + 1e-12
    assert lrs[-1] == pytest.approx(4e-3 if bound == "max_lr" else 1e-4)


def test_param_groups_keep_their_ratios(make_policy):
    model, x, y = regression()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 1e-3},
            {"params": model[2].parameters(), "lr": 1e-4},
        ]
    )
    sched = QLRScheduler(opt, policy=make_policy(seed=5, interval=2))
    train(model, x, y, opt, sched, 20)
    first, second = sched.get_last_lr()
    assert first / second == pytest.approx(10.0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_torch_optimizer_trains_with_the_default_policy(name):
    model, x, y = regression()
    opt = OPTIMIZERS[name](model.parameters())
    sched = QLRScheduler(opt)
    audit = DecisionAudit(sched)
    start = torch.nn.functional.mse_loss(model(x), y).item()
    losses = []
    # 200 steps: the default policy raises the rate until the loss spikes, then backs off, so
    # any one step, the last included, can sit on a spike (see the demo's figures on
    # docs/results/default.md). Whether it trains is the typical loss of the run's last quarter.
    train(model, x, y, opt, sched, 200, after_step=audit, losses=losses)
    end = torch.nn.functional.mse_loss(model(x), y).item()
    assert sched.decisions == 200 // sched.policy.decision_interval and math.isfinite(end)
    assert np.median(losses[-50:]) < start / 2
    # It is the policy at work: each decision moved the rate as its q-values chose, and moved it.
    assert audit.checked > 0 and audit.rate_moved


@pytest.mark.parametrize(
    "as_loss",
    [float, np.float32, np.float64, torch.tensor, lambda v: torch.tensor([v])],
    ids=["float", "np.float32", "np.float64", "0-dim tensor", "1-element tensor"],
)
def test_accepts_scalar_losses(make_policy, as_loss):
    """Every scalar form of a loss drives the scheduler exactly as the float it holds."""

    def run(convert):
        model, x, y = regression()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        sched = QLRScheduler(opt, policy=make_policy(seed=1, interval=3))
        lrs = []
        for _ in range(12):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            value = float(np.float32(loss.item()))  # the same number in every form
            sched.step(convert(value))
            lrs.append(sched.get_last_lr()[0])
        return sched, lrs, value

    sched, lrs, last = run(as_loss)
    reference, reference_lrs, _ = run(float)
    assert sched.steps == 12 and sched.decisions == 4
    tracker = sched.state_dict()["controller"]["tracker"]
    assert tracker["last_loss"] == last  # the loss reached the features
    assert lrs == reference_lrs


def test_accepts_loss_with_grad(make_policy):
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = QLRScheduler(opt, policy=make_policy())
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    sched.step(loss)  # a tensor that requires grad
    assert sched.steps == 1


@pytest.mark.parametrize(
    "loss, error", [(torch.ones(3), ValueError), ("0.5", TypeError), (None, TypeError)]
)
def test_rejects_bad_losses_clearly(make_policy, loss, error):
    model, _, _ = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pytest.raises(error, match="loss"):
        QLRScheduler(opt, policy=make_policy()).step(loss)


def test_rejects_bad_construction(make_policy):
    model, _, _ = regression()
    with pytest.raises(TypeError, match="Optimizer"):
        QLRScheduler(model, policy=make_policy())
    with pytest.raises(ValueError, match="learning rate"):
        QLRScheduler(torch.optim.SGD(model.parameters(), lr=0.0), policy=make_policy())


@pytest.mark.parametrize("rollback, cut_to", [(False, 1e-4), (True, 1e-3)])
def test_nonfinite_loss_cuts_the_rate_and_warns_once(make_policy, caplog, rollback, cut_to):
    """Two non-finite steps in a row: each is cut, unless the first rolls the run back, which
    makes the second (taken from the failed state) moot: one cut, one rollback."""
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = QLRScheduler(opt, policy=make_policy(favour=1, interval=3), rollback=rollback)
    with caplog.at_level(logging.WARNING, logger="qlr"):
        sched.step(float("nan"))
        sched.step(float("inf"))
        train(model, x, y, opt, sched, 4)
    assert sched.get_last_lr()[0] == pytest.approx(cut_to)
    assert sched.rollbacks == int(rollback)
    assert len([r for r in caplog.records if "non-finite" in r.message]) == 1
    assert np.all(np.isfinite(sched.last_observation))


def test_nonfinite_gradients_cut_the_rate_one_step_later(make_policy):
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = QLRScheduler(opt, policy=make_policy(favour=1))
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    sched.step(1.0)
    assert sched.get_last_lr()[0] == 1e-2  # queued: the step is read at the next call
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    sched.step(1.0)
    assert sched.get_last_lr()[0] == pytest.approx(1e-3)
    assert sched.controller.last_cuts == ("nonfinite",)


def test_grad_scaler_skipped_steps_are_not_counted(make_policy):
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # overflows: the first step skips
    sched = QLRScheduler(opt, policy=make_policy(favour=1), scaler=scaler)
    counted = []
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step(loss)
        counted.append(sched.steps)
    assert scaler.get_scale() < 2.0**127
    assert counted[0] == 0 and counted[-1] >= 1
    assert sched.get_last_lr()[0] == 1e-3  # a skipped step is no reason to cut the rate


def test_state_dict_round_trip_makes_the_same_decisions(make_policy, tmp_path):
    policy = make_policy(seed=11, interval=3)

    def fresh():
        model, x, y = regression(seed=2)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        return model, x, y, opt, QLRScheduler(opt, policy=policy)

    model, x, y, opt, sched = fresh()
    train(model, x, y, opt, sched, 10)
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()},
        tmp_path / "ckpt.pt",
    )
    reference = train(model, x, y, opt, sched, 20)

    model2, x2, y2, opt2, sched2 = fresh()
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert sched2.get_last_lr() == [g["lr"] for g in opt2.param_groups]
    assert train(model2, x2, y2, opt2, sched2, 20) == reference


FLAT_FORMAT_KEYS = (
    "steps",
    "decisions",
    "spike_cuts",
    "last_action",
    "last_scale",
    "warned_nonfinite",
    "min_lr",
    "max_lr",
    "batch_size",
    "examples",
    "total_steps",
    "blocks",
    "held_cuts",
    "tracker",
)
"""The keys of a state dict in the flat format: the controller's fields beside the scheduler's."""


@pytest.mark.parametrize("batch", [None, 8], ids=["rate", "batch"])
def test_a_state_dict_in_the_flat_format_still_loads(make_policy, tmp_path, batch):
    """A checkpoint written before the controller saved its own state continues the same run."""
    batch_factors = None if batch is None else (0.5, 1.0, 2.0)
    policy = make_policy(
        seed=5, interval=3, spike_factor=2.0, batch_factors=batch_factors, max_batch_growth=2
    )

    def fresh():
        model, x, y = regression(seed=3)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        # Without rollback: a restored scheduler has no snapshot to return to, the original has.
        scheduler = QLRScheduler(opt, policy=policy, batch_size=batch, rollback=False)
        return model, x, y, opt, scheduler

    model, x, y, opt, sched = fresh()
    train(model, x, y, opt, sched, 10)
    tracker = sched.controller.tracker
    for _ in range(6):  # to a step that does not end a block, so that the spike stays queued
        if tracker.block_length + 1 < tracker.interval:
            break
        train(model, x, y, opt, sched, 1)
    sched.step(torch.tensor(1e6))  # a spike still queued: its cut is held in the state
    state = sched.state_dict()
    flat = {key: value for key, value in state.items() if key != "controller"}
    flat.update(state["controller"])
    flat = {key: value for key, value in flat.items() if key in FLAT_FORMAT_KEYS}
    assert sorted(flat) == sorted(FLAT_FORMAT_KEYS) and flat["held_cuts"] == ["spike"]
    checkpoint = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": flat}
    torch.save(checkpoint, tmp_path / "c")
    sched.controller.tracker.restart_samples()  # what a restore does to the samples in progress
    reference = train(model, x, y, opt, sched, 15)

    model2, x2, y2, opt2, sched2 = fresh()
    ckpt = torch.load(tmp_path / "c", weights_only=True)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert sched2.batch_size == flat["batch_size"]
    assert train(model2, x2, y2, opt2, sched2, 15) == reference
    assert sched2.spike_cuts == sched.spike_cuts and sched2.decisions == sched.decisions


def test_load_state_dict_leaves_the_optimizer_rate_alone(make_policy):
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = QLRScheduler(opt, policy=make_policy(favour=2, interval=1))
    train(model, x, y, opt, sched, 3)
    state = sched.state_dict()
    opt2 = torch.optim.SGD(model.parameters(), lr=5e-4)
    sched2 = QLRScheduler(opt2, policy=make_policy(favour=2, interval=1))
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == 5e-4 and sched2.get_last_lr() == [5e-4]


GUARDED = {"spike_factor": 2.0, "features": FEATURE_NAMES[::2]}


@pytest.mark.parametrize(
    "family, optimizer, lr, guard",
    [
        ("quadratic", "sgd", 1e-2, {}),
        ("logistic", "adam", 1e-2, {}),
        ("mlp", "momentum", 1e-2, {}),
        ("quadratic", "momentum", 0.3, GUARDED),  # too large a rate: the spike guard acts
        ("rosenbrock", "momentum", 1e-3, GUARDED),
    ],
)
def test_scheduler_sees_what_the_env_sees(make_policy, family, optimizer, lr, guard):
    """One inner run fed through the env and through the scheduler: same features, decisions."""
    policy = make_policy(seed=3, interval=4, **guard)
    dist = make_distribution(family)
    env = LearningRateEnv(
        problem=dist.sample(np.random.default_rng(0)), steps_per_decision=4, horizon=8, **guard
    )
    obs, info = env.reset(seed=0, options={"lr": lr, "optimizer": optimizer})
    env_obs, env_actions, env_lrs = [obs], [], []
    for _ in range(8):
        env_actions.append(policy.act(obs))
        obs, _, terminated, truncated, info = env.step(env_actions[-1])
        env_obs.append(obs)
        env_lrs.append(info["lr"])
        if terminated or truncated:
            break

    problem = dist.sample(np.random.default_rng(0))
    opt = make_optimizer(optimizer, problem.params, lr)
    # The environment trains without the rollback guard: the same rules, step for step.
    sched = QLRScheduler(opt, policy=policy, rollback=False)
    sched_obs, sched_actions, sched_lrs = [], [], []
    while len(sched_obs) < len(env_obs):
        loss = problem.loss_and_grad()
        opt.step()
        sched.step(loss)
        if sched.steps % 4 == 0:
            sched_obs.append(sched.last_observation)
            sched_actions.append(sched.last_action)
            sched_lrs.append(sched.get_last_lr()[0])
    np.testing.assert_array_equal(np.array(sched_obs), np.array(env_obs))
    assert sched_actions[: len(env_actions)] == env_actions
    # The env reports the rate after a block (guard cuts included), the scheduler after the
    # decision that closes it: one decision factor apart.
    factors = [policy.action_factors[a] for a in env_actions[1:]]
    expected = [lr * f for lr, f in zip(env_lrs, factors, strict=False)]
    assert sched_lrs[1 : len(expected) + 1] == pytest.approx(expected)
    if guard and family == "quadratic":
        assert sched.spike_cuts > 0  # the guard really acted, identically in both


def test_tensorboard_writer_receives_decisions(make_policy, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    writer = SummaryWriter(tmp_path)
    sched = QLRScheduler(opt, policy=make_policy(interval=2), writer=writer)
    train(model, x, y, opt, sched, 6)
    writer.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"qlr/lr", "qlr/action", "qlr/q_value/0"} <= set(tags)
    assert len(acc.Scalars("qlr/lr")) == 3


def test_a_rate_set_to_zero_elsewhere_does_not_crash_the_loop(make_policy, caplog):
    model, x, y = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = QLRScheduler(opt, policy=make_policy(favour=2, interval=1))
    opt.param_groups[0]["lr"] = 0.0  # e.g. a warmup scheduler running beside qlr
    with caplog.at_level(logging.WARNING, logger="qlr"):
        train(model, x, y, opt, sched, 3)
    assert opt.param_groups[0]["lr"] == 0.0
    assert len([r for r in caplog.records if "learning rate is" in r.message]) == 1
