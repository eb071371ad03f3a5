"""Noise-level control: learned batch-size decisions beside the learning rate.

The env's batch actions, the example budget, the two noise features, the scheduler's batch size
and `DynamicBatchSampler` in a real DataLoader, and old policy files driving rate-only control.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DecisionAudit
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

import qlr
from qlr.control import LRController
from qlr.envs import LearningRateEnv
from qlr.envs.optimizers import make_optimizer
from qlr.envs.problems import sample_least_squares, sample_mlp
from qlr.envs.run import run_inner, run_policy
from qlr.features import FEATURES_V2, FEATURES_V3, FeatureTracker
from qlr.policy import load_policy, save_policy

DATA = Path(__file__).parent / "data"  # policy files of earlier feature versions, as shipped

BATCH = (1.0, 2.0)  # keep or double
GROW, KEEP = 1, 0  # with factors (1,): action i * 2 + j, rate factor 1, batch factor BATCH[j]


def batch_env(problem=None, **kwargs):
    problem = problem or sample_least_squares(np.random.default_rng(0), n=512, batch_size=16)
    args = dict(action_factors=(0.5, 1.0, 2.0), batch_factors=BATCH, steps_per_decision=4)
    return LearningRateEnv(problem=problem, **{**args, **kwargs})


def hold_and(batch_index: int) -> int:
    """The action that holds the rate (factor 1 is index 1) with batch factor BATCH[j]."""
    return 1 * len(BATCH) + batch_index


def train_one_epoch(loader, model, opt, sched, loss_fn, after_step=None) -> list[int]:
    """A user's loop over `loader`, stepping `sched` after every step; the batch sizes seen."""
    sizes = []
    for xb, yb in loader:
        sizes.append(len(xb))
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        sched.step(loss)
        if after_step is not None:
            after_step()
    return sizes


# --------------------------------------------------------------------------- the environment


def test_batch_actions_change_the_batch_the_env_trains_with():
    env = batch_env(max_batch_growth=4, horizon=100)
    assert env.action_space.n == 6 and env.observation_space.shape == (len(FEATURES_V3),)
    _, info = env.reset(seed=0, options={"lr": 1e-3, "optimizer": "sgd"})
    assert info["batch_size"] == 16 and env.problem.batch_size == 16
    sizes = []
    for _ in range(4):
        before = env.problem.examples_seen
        _, _, _, _, info = env.step(hold_and(GROW))
        sizes.append(info["batch_size"])
        used = env.problem.examples_seen - before - env.problem.n  # minus the reward's full pass
        assert used == env.controller.tracker.interval * info["batch_size"]
    assert sizes == [32, 64, 64, 64]  # doubled twice, then held at 4 x 16
    _, _, _, _, info = env.step(hold_and(KEEP))
    assert info["batch_size"] == 64
    # Fewer steps per decision as the batch grows: every decision spends the same examples.
    assert env.controller.tracker.interval == 1
    _, info = env.reset(seed=1, options={"lr": 1e-3, "optimizer": "sgd"})
    assert info["batch_size"] == 16 and env.controller.tracker.interval == 4


def test_the_example_budget_ends_the_episode_whatever_the_batch():
    """horizon x k x b0 examples, counted from the gradient evaluations, never exceeded."""
    for action in (hold_and(KEEP), hold_and(GROW)):
        env = batch_env(horizon=10, max_batch_growth=8)
        env.reset(seed=0, options={"lr": 1e-3, "optimizer": "sgd"})
        budget = 10 * 4 * 16
        assert env.example_budget == budget
        decisions, truncated, grad_evals = 0, False, env.problem.grad_evals
        while not truncated:
            _, _, terminated, truncated, info = env.step(action)
            decisions += 1
            assert not terminated and info["train_examples"] <= budget
        grads = env.problem.grad_evals - grad_evals
        assert budget - info["batch_size"] < info["train_examples"] <= budget
        if action == hold_and(KEEP):
            assert decisions == 10 - 1 and grads == 9 * 4  # the first block came with reset
        else:
            assert info["batch_size"] == 128 and grads < 9 * 4  # bigger batches, fewer steps


def test_batch_mode_refuses_full_batch_problems():
    problem = sample_least_squares(np.random.default_rng(0), n=100)  # no batch_size: full batch
    env = batch_env(problem=problem)
    with pytest.raises(ValueError, match="full-batch"):
        env.reset(seed=0)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_observations_stay_finite_and_in_the_space_under_extreme_noise(scale):
    """Batch 1 of a tiny data set with noise far above the signal, at every rate and batch."""
    rng = np.random.default_rng(5)
    problem = sample_least_squares(rng, n=64, dim=8, noise=1e3, batch_size=1, scale=scale)
    env = batch_env(problem=problem, horizon=30, max_batch_growth=64, lr_bounds=(1e-8, 10.0))
    actions = np.random.default_rng(0)
    noise, noise_seen = FEATURES_V3.index("grad_noise"), []
    for episode in range(3):
        obs, _ = env.reset(seed=episode, options={"lr": [1e-6, 1e-2, 5.0][episode]})
        assert env.observation_space.contains(obs)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(int(actions.integers(6)))
            assert env.observation_space.contains(obs) and np.all(np.isfinite(obs))
            assert math.isfinite(reward) and 1 <= info["batch_size"] <= 64
            noise_seen.append(obs[noise])
            done = terminated or truncated
    assert max(noise_seen) > 0.2  # such noise is visible (0 would mean identical gradients)


def test_rate_only_env_is_unchanged():
    env = LearningRateEnv(problem="train_stochastic")
    assert env.action_space.n == 3 and env.feature_names == FEATURES_V2
    _, info = env.reset(seed=0)
    start = info["batch_size"]
    for _ in range(5):
        _, _, _, _, info = env.step(2)
    assert info["batch_size"] == start and env.example_budget is None


# --------------------------------------------------------------------------- features


def test_grad_noise_reads_agreement_noise_and_overshoot():
    """0 for equal successive gradients, ~0.5 for independent noise, ~1 for sign flips."""

    def noise_feature(make_grad) -> float:
        tracker = FeatureTracker(interval=8, dense=True)
        for t in range(8):
            tracker.update(1.0 - 0.01 * t, [make_grad(t)])
        return tracker.observation()[FEATURES_V3.index("grad_noise")]

    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(1000, generator=gen)
    assert noise_feature(lambda t: direction.clone()) == pytest.approx(0.0, abs=1e-6)
    assert noise_feature(lambda t: torch.randn(1000, generator=gen)) == pytest.approx(0.5, abs=0.05)
    assert noise_feature(lambda t: direction * (-1) ** t) == pytest.approx(1.0, abs=1e-6)


def test_batch_growth_feature_follows_the_recorded_changes():
    tracker = FeatureTracker(interval=1)
    growth = FEATURES_V3.index("batch_growth")
    tracker.update(1.0, [torch.ones(3)])
    assert tracker.observation()[growth] == 0.0
    tracker.record_batch_change(2.0)
    tracker.record_batch_change(4.0)
    tracker.update(0.9, [torch.ones(3)])
    assert tracker.observation()[growth] == pytest.approx(math.tanh(1.0))  # 8x = 3 doublings


def test_only_a_controller_reading_grad_noise_reads_every_gradient():
    assert LRController(features=FEATURES_V2).tracker.dense is False
    assert LRController(batch_factors=BATCH, batch_size=8).tracker.dense is True


# --------------------------------------------------------------------------- deployment


def test_controller_maps_actions_and_keeps_bounds():
    controller = LRController(
        action_factors=(0.5, 1.0, 2.0), batch_factors=(0.5, 1.0, 2.0), batch_size=32
    )
    assert controller.n_actions == 9 and controller.max_batch_size == 256
    assert [controller.action(i) for i in (0, 4, 8)] == [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]
    for _ in range(5):
        controller.scale_batch(2.0)
    assert controller.batch_size == 256 and controller.tracker.interval == 1
    for _ in range(12):
        controller.scale_batch(0.5)
    assert controller.batch_size == 1
    with pytest.raises(ValueError, match="batch_size"):
        LRController(batch_factors=BATCH)
    with pytest.raises(ValueError, match="include 1"):
        LRController(batch_factors=(2.0, 4.0), batch_size=8)


def test_scheduler_and_sampler_grow_the_batch_of_a_real_dataloader(make_policy):
    torch.manual_seed(0)
    x, y = torch.randn(2048, 10), torch.randn(2048, 1)
    model = torch.nn.Linear(10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    policy = make_policy(interval=2, batch_factors=BATCH, max_batch_growth=4, favour=hold_and(1))
    sched = qlr.QLRScheduler(opt, policy=policy, batch_size=16)
    loader = DataLoader(
        TensorDataset(x, y), batch_sampler=qlr.DynamicBatchSampler(RandomSampler(x), sched)
    )
    seen = train_one_epoch(loader, model, opt, sched, torch.nn.functional.mse_loss)
    # Decisions every 2 steps at 16, every step at 32 and 64 (same examples per decision).
    assert seen[:6] == [16, 16, 32, 64, 64, 64]
    assert sum(seen) == 2048 and max(seen) == 64 == sched.batch_size
    assert opt.param_groups[0]["lr"] == 1e-2  # the favoured action holds the rate
    state = sched.state_dict()
    fresh = qlr.QLRScheduler(opt, policy=policy, batch_size=16)
    fresh.load_state_dict(state)
    assert fresh.batch_size == 64 and fresh.controller.tracker.interval == 1


def test_a_batch_policy_needs_the_starting_batch_size(make_policy):
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        qlr.QLRScheduler(opt, policy=make_policy(batch_factors=BATCH))


def test_dynamic_batch_sampler_reads_a_callable_and_rejects_bad_sources():
    size = {"now": 3}
    sampler = qlr.DynamicBatchSampler(SequentialSampler(range(10)), lambda: np.int64(size["now"]))
    batches = []
    for batch in sampler:
        batches.append(batch)
        size["now"] = 4
    assert batches == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert len(sampler) == 3
    assert list(qlr.DynamicBatchSampler(range(10), lambda: 4, drop_last=True)) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    with pytest.raises(TypeError, match="batch_size"):
        qlr.DynamicBatchSampler(range(10), 32)
    with pytest.raises(ValueError, match="positive integer"):
        qlr.DynamicBatchSampler(range(10), lambda: 0)


def test_old_policy_files_still_drive_rate_only_control(tmp_path, make_policy):
    """The first design's shipped default (feature version 2, kept in tests/data) and a
    version-2 file: rate only, batch untouched."""
    default = load_policy(DATA / "default_v2.qlr")
    assert default.metadata.feature_version == 2 and default.batch_factors is None
    assert default.metadata.feature_names == FEATURES_V2
    path = save_policy(make_policy(favour=0, interval=2), tmp_path / "old.qlr")
    for policy in (default, load_policy(path)):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = qlr.QLRScheduler(opt, policy=policy, batch_size=32)
        audit = DecisionAudit(sched)
        x, y = torch.randn(256, 4), torch.randn(256, 1)
        loader = DataLoader(
            TensorDataset(x, y), batch_sampler=qlr.DynamicBatchSampler(range(256), sched)
        )
        for _ in range(3):
            loss_fn = torch.nn.functional.mse_loss
            sizes = train_one_epoch(loader, model, opt, sched, loss_fn, after_step=audit)
            assert sizes == [32] * 8
        assert sched.decisions == 24 // policy.decision_interval and sched.batch_size == 32
        assert not sched.controller.tracker.dense
        # It acted on the rate alone: each decision as the policy's q-values chose.
        assert audit.checked > 0 and audit.rate_moved, policy
    assert opt.param_groups[0]["lr"] < 0.1  # the last one always lowers the rate


# --------------------------------------------------------------------------- equal examples


def test_scheduler_sees_what_the_env_sees_with_batch_actions(make_policy):
    """One minibatch run through the env and through the scheduler + hook: same everything."""
    policy = make_policy(seed=4, interval=4, features=FEATURES_V3, batch_factors=BATCH)

    def make():
        return sample_mlp(np.random.default_rng(0), hidden=(8, 8), batch_size=8)

    env = batch_env(problem=make(), max_batch_growth=8, horizon=12)
    obs, info = env.reset(seed=0, options={"lr": 0.05, "optimizer": "momentum"})
    env_obs, env_batches = [obs], []
    for _ in range(12):
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        env_obs.append(obs)
        env_batches.append(info["batch_size"])
        if terminated or truncated:
            break
    assert len(set(env_batches)) > 1, "the policy should move the batch for this test to bite"

    sched_problem = make()
    opt = make_optimizer("momentum", sched_problem.params, 0.05)
    sched = qlr.QLRScheduler(opt, policy=policy, batch_size=8, max_batch_size=64)
    sched_obs = []
    while len(sched_obs) < len(env_obs):
        loss = sched_problem.loss_and_grad()
        opt.step()
        decisions = sched.decisions
        sched.step(loss)
        if sched.decisions > decisions:
            sched_obs.append(sched.last_observation)
            sched_problem.set_batch_size(sched.batch_size)
    np.testing.assert_array_equal(np.array(sched_obs), np.array(env_obs))


def test_run_inner_stops_before_the_example_budget():
    problem = sample_least_squares(np.random.default_rng(0), n=400, batch_size=30)
    opt = torch.optim.SGD(problem.params, lr=1e-3)
    result = run_inner(problem, opt, steps=1000, max_examples=100)
    assert result.steps_taken == 3 and result.examples_seen == 90


def test_a_batch_policy_runs_at_equal_examples_not_equal_steps(make_policy):
    """run_policy (evaluation, compare) gives a growing batch the examples of `steps` at b0."""
    grow = make_policy(interval=2, batch_factors=BATCH, favour=hold_and(1))
    keep = make_policy(interval=2, batch_factors=BATCH, favour=hold_and(0))
    results = {}
    for name, policy in (("grow", grow), ("keep", keep)):
        problem = sample_least_squares(np.random.default_rng(0), n=4000, batch_size=8)
        opt = torch.optim.SGD(problem.params, lr=1e-3)
        results[name] = run_policy(problem, opt, policy, steps=40)
    assert results["keep"].steps_taken == 40 and results["keep"].examples_seen == 320
    assert results["grow"].examples_seen <= 320 and results["grow"].steps_taken < 40


# --------------------------------------------------------------------------- files and training


def test_policy_file_keeps_the_batch_actions(tmp_path, make_policy):
    policy = make_policy(seed=2, features=FEATURES_V3, batch_factors=BATCH, max_batch_growth=8)
    loaded = load_policy(save_policy(policy, tmp_path / "noise.qlr"))
    assert loaded.batch_factors == BATCH and loaded.metadata.max_batch_growth == 8
    assert loaded.n_actions == 6 and loaded.metadata.feature_names == FEATURES_V3
    obs = np.random.default_rng(0).uniform(-1, 1, (16, len(FEATURES_V3))).astype(np.float32)
    np.testing.assert_array_equal(loaded.q_values(obs), policy.q_values(obs))
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    sched = qlr.QLRScheduler(opt, policy=loaded, batch_size=10)
    assert sched.controller.max_batch_size == 80  # the trained growth bound, x the start


def test_policy_file_with_bad_batch_factors_is_refused(tmp_path, make_policy):
    from qlr.policy import PolicyFileError

    bad = make_policy(batch_factors=BATCH)
    bad.metadata.batch_factors = (2.0, 4.0)  # no "keep": not something training writes
    with pytest.raises(PolicyFileError, match="batch factors"):
        load_policy(save_policy(bad, tmp_path / "bad.qlr"))
    wrong_size = make_policy(batch_factors=BATCH)
    wrong_size.metadata.batch_factors = (0.5, 1.0, 2.0)  # 9 actions, the network has 6
    with pytest.raises(PolicyFileError, match="layer"):
        load_policy(save_policy(wrong_size, tmp_path / "wrong.qlr"))


def test_a_tiny_noise_level_training_run_exports_a_batch_policy(tmp_path):
    from pathlib import Path

    from qlr.agents.cli import main

    config = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "tiny.yaml"
    overrides = [
        "env.problem=train_stochastic",
        "env.batch_factors=[1, 2]",
        "env.horizon=10",
        "eval.distribution=val_stochastic",
        "eval.families=[least_squares]",
        "eval.steps=20",
        "final_eval=null",
        "total_timesteps=200",
        "checkpoint_freq=100",
        "eval_freq=100",
    ]
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 0
    policy = load_policy(tmp_path / "run" / "final_policy.qlr")
    assert policy.batch_factors == BATCH and policy.n_actions == 6
    assert policy.metadata.feature_names == FEATURES_V3 and policy.metadata.max_batch_growth == 8
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "run" / "tensorboard").iterdir()
    acc = EventAccumulator(str(events))
    acc.Reload()
    growth = [s.value for s in acc.Scalars("rollout/batch_growth")]
    assert growth and all(1 <= g <= 8 for g in growth)
    problem = sample_least_squares(np.random.default_rng(1), n=2000, batch_size=16)
    opt = torch.optim.SGD(problem.params, lr=1e-2)
    result = run_policy(problem, opt, policy, steps=60)
    assert not result.diverged and result.examples_seen <= 60 * 16


def test_the_noise_level_env_is_registered_and_passes_gymnasium_checks():
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    from qlr.envs import NOISE_ENV_ID

    env = gymnasium.make(NOISE_ENV_ID, horizon=6)
    assert env.action_space.n == 6 and env.observation_space.shape == (len(FEATURES_V3),)
    check_env(env.unwrapped, skip_render_check=True)
    _, info = env.reset(seed=0)
    assert info["batch_growth"] == 1.0 and env.unwrapped.example_budget is not None


def test_the_shipped_noise_policy_drives_a_real_loop():
    policy = load_policy("noise")
    assert policy.batch_factors == BATCH
    # It reads what its config names: the noise features beside the update and budget ones.
    assert {"grad_noise", "batch_growth", "update_slope", "progress"} <= set(
        policy.metadata.feature_names
    )
    torch.manual_seed(0)
    x = torch.randn(4096, 10)
    y = (x[:, :1] > 0).float()
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = qlr.QLRScheduler(opt, policy="noise", batch_size=16)
    loader = DataLoader(
        TensorDataset(x, y), batch_sampler=qlr.DynamicBatchSampler(RandomSampler(x), sched)
    )
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    audit = DecisionAudit(sched)
    sizes = train_one_epoch(loader, model, opt, sched, loss_fn, after_step=audit)
    assert sum(sizes) == 4096 and sched.decisions > 0
    assert all(16 <= s <= 128 for s in sizes[:-1])  # within 8x the start (the trained bound)
    # It is the policy at work: rate and batch moved as its q-values chose, and the rate moved.
    assert audit.checked > 0 and audit.rate_moved
    # The loop got the batch sizes the scheduler chose (the last batch takes what is left).
    chosen = audit.batch_sizes[:-1]
    assert sizes[:-1] == chosen[: len(sizes) - 1]


def test_holding_the_batch_keeps_the_policy_on_the_rate_alone(make_policy):
    from qlr.envs.run import make_scheduler, scheduler_hook

    problem = sample_least_squares(np.random.default_rng(0), n=2000, batch_size=8)
    opt = torch.optim.SGD(problem.params, lr=1e-3)
    grow = make_policy(interval=2, batch_factors=BATCH, favour=hold_and(1))
    scheduler = make_scheduler(problem, opt, grow, hold_batch=True)
    result = run_inner(problem, opt, 40, scheduler_hook(problem, scheduler))
    assert scheduler.decisions == 20 and problem.batch_size == 8 == scheduler.batch_size
    assert result.examples_seen == 40 * 8


@pytest.mark.parametrize("batch", [32, 64, 128])
def test_decisions_are_paced_in_examples_when_the_batch_does_not_divide_them(batch):
    """k = 5 from a batch of 32: every decision's share is 160 examples, whatever the batch.

    At 64 the blocks alternate 3 and 2 steps (192, 128 examples), at 128 two and one step, and
    the n-th decision comes at the first step by which n x 160 examples are spent: a block is
    never short of its share by a batch or more, and the drift never accumulates.
    """
    controller = LRController(
        batch_factors=BATCH, decision_interval=5, batch_size=32, max_batch_size=256
    )
    controller.scale_batch(batch / 32)
    assert controller.batch_size == batch
    spent, decisions = 0, 0
    while decisions < 40:
        controller.record_step(1.0, [torch.ones(2)])
        spent += batch
        if controller.decision_due:
            decisions += 1
            controller.observe()
            assert decisions * 160 <= spent < decisions * 160 + batch
    assert controller.examples == spent


def test_a_batch_larger_than_a_decisions_share_decides_every_step():
    controller = LRController(
        batch_factors=BATCH, decision_interval=5, batch_size=32, max_batch_size=256
    )
    controller.scale_batch(8.0)  # 256 examples a step, more than the 160 of a decision
    for _ in range(6):
        controller.record_step(1.0, [torch.ones(2)])
        assert controller.decision_due
        controller.observe()
