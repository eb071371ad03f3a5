"""The rollback guard: a run pushed to overflow goes back to its last good state and finishes."""

import math

import pytest
import torch

from qlr import QLRScheduler
from qlr.control import CEILING_BELOW_FAILURE
from qlr.rollback import Snapshot


def deep_linear(seed=0, depth=6, width=8):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(width, width, bias=False) for _ in range(depth)]
    model = torch.nn.Sequential(*layers)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, width, generator=gen)
    y = x @ torch.randn(width, width, generator=gen)
    return model, x, y


def train(scheduler, model, x, y, steps):
    """Steps the loop; returns every loss (a run that overflowed keeps stepping, as loops do)."""
    losses = []
    for _ in range(steps):
        scheduler.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        scheduler.optimizer.step()
        scheduler.step(loss)
        losses.append(loss.item())
    return losses


def raised_without_bound(make_policy, rollback):
    """A deep linear net under Nesterov, with a controller that doubles the rate every 2 steps."""
    model, x, y = deep_linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    policy = make_policy(favour=2, interval=2, spike_factor=10.0)
    scheduler = QLRScheduler(optimizer, policy=policy, max_lr=1e6, rollback=rollback)
    return scheduler, model, x, y


def test_a_run_pushed_to_overflow_recovers_and_finishes_finite(make_policy):
    scheduler, model, x, y = raised_without_bound(make_policy, rollback=True)
    losses = train(scheduler, model, x, y, 200)
    assert scheduler.rollbacks >= 1
    assert not all(math.isfinite(loss) for loss in losses)  # it did overflow, more than once
    final = torch.nn.functional.mse_loss(model(x), y).item()
    assert math.isfinite(final) and final < losses[0]


def test_without_rollback_the_same_run_is_lost_and_nothing_was_kept(make_policy):
    scheduler, model, x, y = raised_without_bound(make_policy, rollback=False)
    losses = train(scheduler, model, x, y, 200)
    assert scheduler._snapshot is None and scheduler.rollbacks == 0
    assert not math.isfinite(losses[-1])  # the run the guard above saves is lost here


def test_the_rate_stays_below_the_one_that_failed_for_a_while(make_policy):
    scheduler, model, x, y = raised_without_bound(make_policy, rollback=True)
    lrs = []
    for _ in range(200):
        train(scheduler, model, x, y, 1)
        lrs.append(scheduler.get_last_lr()[0])
        if scheduler.rollbacks:
            break
    failed = max(lrs)
    following = [scheduler.get_last_lr()[0] for _ in range(10) if train(scheduler, model, x, y, 2)]
    assert max(following) <= CEILING_BELOW_FAILURE * failed * 1.05**5 + 1e-12
    assert scheduler.state_dict()["controller"]["ceiling"] is not None


def test_the_restored_state_equals_the_saved_one_bit_for_bit():
    model, x, y = deep_linear(depth=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    step()  # the optimizer has state (moments, step counts) worth keeping
    snapshot = Snapshot(optimizer)
    snapshot.save()
    snapshot.confirm()
    params = [p.detach().clone() for p in model.parameters()]
    state = {
        i: {k: v.clone() for k, v in optimizer.state[p].items()}
        for i, p in enumerate(model.parameters())
    }
    for _ in range(3):
        step()
    assert not torch.equal(next(model.parameters()), params[0])
    snapshot.restore()
    for i, p in enumerate(model.parameters()):
        assert torch.equal(p, params[i])
        for key, value in state[i].items():
            assert torch.equal(optimizer.state[p][key], value)
    # The optimizer goes on from the restored state exactly as it went on from the saved one.
    step()
    after_restore = [p.detach().clone() for p in model.parameters()]
    snapshot.restore()
    step()
    assert all(torch.equal(a, p) for a, p in zip(after_restore, model.parameters(), strict=True))
    # The confirmed copy holds the parameters, both moments and the step counts.
    assert snapshot.nbytes >= 3 * sum(p.numel() * 4 for p in model.parameters())


def test_a_snapshot_before_the_first_step_restores_an_optimizer_without_state():
    model, x, y = deep_linear(depth=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    snapshot = Snapshot(optimizer)
    snapshot.save()
    snapshot.confirm()
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    snapshot.restore()
    assert all(not optimizer.state[p] for p in model.parameters())


def test_a_snapshot_in_host_memory_restores_the_same_values():
    model, x, y = deep_linear(depth=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    snapshot = Snapshot(optimizer, device="cpu")
    snapshot.save()
    snapshot.confirm()
    kept = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    snapshot.restore()
    assert all(torch.equal(p, k) for p, k in zip(model.parameters(), kept, strict=True))


def test_only_a_confirmed_state_is_restored():
    """A candidate whose block failed is never returned to: the state before it is."""
    model, x, y = deep_linear(depth=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    snapshot = Snapshot(optimizer)
    snapshot.save()
    snapshot.confirm()
    good = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)  # a state that looked fine at its decision and was not
    snapshot.save()
    snapshot.discard()
    snapshot.restore()
    assert all(torch.equal(p, g) for p, g in zip(model.parameters(), good, strict=True))


@pytest.mark.parametrize("every", [0, 1.5])
def test_snapshot_every_must_be_a_positive_integer(make_policy, every):
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="snapshot_every"):
        QLRScheduler(optimizer, policy=make_policy(), snapshot_every=every)


def test_the_rollback_count_travels_in_the_state_dict(make_policy, tmp_path):
    scheduler, model, x, y = raised_without_bound(make_policy, rollback=True)
    train(scheduler, model, x, y, 200)
    torch.save(scheduler.state_dict(), tmp_path / "s.pt")
    restored, *_ = raised_without_bound(make_policy, rollback=True)
    restored.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert restored.rollbacks == scheduler.rollbacks >= 1
    assert restored.controller.ceiling == scheduler.controller.ceiling


def always_raising_episode(rollback, decisions=60, features=None):
    """The environment on a deep linear net under Nesterov, the rate doubled every decision."""
    from qlr.envs import LearningRateEnv

    env = LearningRateEnv(
        problem="deep_linear",
        features=features,
        optimizer="nesterov",
        action_factors=5,
        rollback=rollback,
        horizon=decisions,
        initial_lr_range=(1e-2, 1e-2),
        spike_factor=10.0,
        spike_cut=0.1,
    )
    env.reset(seed=0)
    steps = []
    for _ in range(decisions):
        before = [p.detach().clone() for p in env.problem.params]
        lr = env.optimizer.param_groups[0]["lr"]
        obs, reward, terminated, truncated, info = env.step(4)  # x2
        steps.append((before, lr, reward, terminated, truncated, info, obs))
        if terminated or truncated:
            break
    return env, steps


def test_the_environment_trains_under_the_rollback_rule():
    env, steps = always_raising_episode(rollback=True)
    assert len(steps) == 60 and steps[-1][4] and not any(s[3] for s in steps)  # all 60 ran
    undone = [s for s in steps if s[5]["rolled_back"]]
    assert env.rollbacks == len(undone) >= 1
    assert all(s[2] == -env.divergence_penalty for s in undone)
    # The first undone block left the parameters exactly where it started, the rate cut.
    index = next(i for i, s in enumerate(steps) if s[5]["rolled_back"])
    after = steps[index + 1][0] if index + 1 < len(steps) else env.problem.params
    for p, q in zip(steps[index][0], after, strict=True):
        assert torch.equal(p, q)
    assert steps[index][5]["lr"] < steps[index][1]
    assert env.controller.ceiling is None or env.controller.ceiling < steps[index][1]
    final = steps[-1][5]["loss"]
    assert math.isfinite(final) and final < steps[0][5]["initial_loss"]


def test_without_rollback_the_environment_ends_the_episode_and_keeps_nothing():
    env, steps = always_raising_episode(rollback=False)
    assert steps[-1][3] and len(steps) < 60  # terminated by the divergence
    assert env._snapshot is None and env.rollbacks == 0
    assert not any(s[5]["rolled_back"] for s in steps)


def test_the_policy_sees_how_close_the_rate_is_to_the_one_that_failed(make_policy):
    model, x, y = deep_linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    policy = make_policy(favour=2, interval=2, spike_factor=10.0, features=("lr_ceiling",))
    scheduler = QLRScheduler(optimizer, policy=policy, max_lr=1e6)
    seen = []
    for _ in range(200):
        train(scheduler, model, x, y, 2)
        seen.append((float(scheduler.last_observation[0]), scheduler.rollbacks))
    before = [value for value, rollbacks in seen if rollbacks == 0]
    after = [value for value, rollbacks in seen if rollbacks > 0]
    assert before and after and set(before) == {0.0}  # no failure yet: no ceiling to be near
    assert max(after) == pytest.approx(1.0)  # raised straight back up to the ceiling
    # Just after a cut (x0.1 of a rate whose ceiling is half of it) the rate is well below it.
    assert 0 < min(after) <= 1 - math.tanh(math.log10(5)) + 1e-6


def test_lr_ceiling_reads_zero_without_a_ceiling_and_one_at_it():
    from qlr.feature_set import lr_ceiling

    assert lr_ceiling(None, 0.1) == 0.0
    assert lr_ceiling(0.1, 0.1) == 1.0 and lr_ceiling(0.1, 0.3) == 1.0
    assert lr_ceiling(1.0, 0.1) == pytest.approx(1 - math.tanh(1.0))
    assert lr_ceiling(1.0, float("nan")) == 1.0  # a rate that is no rate: assume the worst


def test_the_environment_shows_the_ceiling_to_the_policy():
    env, steps = always_raising_episode(rollback=True, features=("lr_drift", "lr_ceiling"))
    index = next(i for i, s in enumerate(steps) if s[5]["rolled_back"])
    assert all(s[6][1] == 0.0 for s in steps[:index])  # nothing failed yet
    assert 0.0 < steps[index][6][1] < 1.0  # cut below the ceiling the failure left
    # Raised back up to the ceiling, which has relaxed by a step (x1.05) since: 0.979.
    assert max(s[6][1] for s in steps[index:]) >= 1 - math.tanh(math.log10(1.05)) - 1e-6
