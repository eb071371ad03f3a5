"""LRController: the spike guard, the lr_drift feature and feature selection."""

import math

import numpy as np
import pytest
import torch

from qlr import QLRScheduler
from qlr.control import LRController, reference_lr, resolve_features
from qlr.features import FEATURE_NAMES, FEATURES_V1
from qlr.policy import load_policy, save_policy


def _grads(value: float = 1.0) -> list[torch.Tensor]:
    return [torch.full((4,), value)]


def _feed(controller: LRController, losses: list[float]) -> list[float]:
    return [controller.record_step(loss, _grads()) for loss in losses]


def test_spike_guard_cuts_on_a_spike_and_not_on_noise():
    controller = LRController(decision_interval=6, spike_factor=2.0, spike_cut=0.5)
    # First block: reference is the run's first loss (1.0) until a decision closes the block.
    assert _feed(controller, [1.0, 1.3, 0.7, 1.9, 1.0, 1.45]) == [1.0] * 6
    controller.observe()  # reference becomes the block mean, 1.225
    assert controller.tracker.reference_loss == pytest.approx(1.225)
    # A step is judged at the next call: 2.5 > 2 * 1.225 and rising is cut when 2.48 comes.
    assert _feed(controller, [2.4, 2.5, 2.48]) == [1.0, 1.0, 0.5]
    assert controller.last_cuts == ("spike",)
    assert _feed(controller, [2.7]) == [1.0]  # 2.48: above 2x, but falling back: left alone
    assert controller.last_cuts == ()
    assert _feed(controller, [2.6]) == [0.5]  # 2.7: rising again
    # The step that completes the block is judged at once, before the decision: 2.6 (falling)
    # is left alone and 2.9 (rising) is cut in the same call.
    assert _feed(controller, [2.9]) == [0.5]
    assert controller.last_cuts == ("spike",) and controller.decision_due


def test_guards_act_one_step_later_and_at_once_on_a_block_end():
    controller = LRController(decision_interval=3, spike_factor=2.0, nonfinite_cut=0.1)
    assert _feed(controller, [1.0, math.nan]) == [1.0, 1.0]  # the nan is still queued
    assert controller.tracker.pending
    assert _feed(controller, [1.0]) == [pytest.approx(0.1)]  # judged, and the block ends
    assert controller.last_cuts == ("nonfinite",) and not controller.tracker.pending
    controller.observe()
    # Two cuts in one call: the step before (a NaN gradient) and the block's last step.
    assert _feed(controller, [1.0]) == [1.0]
    assert controller.record_step(1.0, _grads(math.nan)) == 1.0
    assert controller.record_step(math.inf, _grads()) == pytest.approx(0.01)
    assert controller.last_cuts == ("nonfinite",) * 2


def test_spike_guard_is_off_by_default_and_nonfinite_still_wins():
    plain = LRController(decision_interval=2)
    assert _feed(plain, [1.0, 1e6, 1e9]) == [1.0, 1.0, 1.0]
    guarded = LRController(decision_interval=2, spike_factor=2.0, nonfinite_cut=0.1)
    assert guarded.record_step(1.0, _grads()) == 1.0
    assert guarded.record_step(math.inf, _grads()) == 0.1
    assert guarded.last_cuts == ("nonfinite",)
    assert guarded.record_step(1.0, _grads(math.nan)) == 0.1


def test_negative_losses_never_trip_the_guard():
    controller = LRController(decision_interval=2, spike_factor=2.0)
    assert _feed(controller, [-1.0, -0.1, 5.0]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spike_factor": 1.0}, "spike_factor"),
        ({"spike_factor": math.nan}, "spike_factor"),
        ({"spike_cut": 1.0}, "spike_cut"),
        ({"features": ["loss_noise", "nope"]}, "unknown"),
        ({"features": ["loss_noise", "loss_noise"]}, "distinct"),
        ({"features": "loss_noise"}, "list"),
        ({"features": []}, "distinct"),
    ],
)
def test_bad_controller_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LRController(**kwargs)


def test_lr_drift_counts_the_moves_the_controller_made():
    controller = LRController(decision_interval=1, min_lr=1e-8, max_lr=1.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=1e-2)
    drift = FEATURE_NAMES.index("lr_drift")
    controller.record_step(1.0, _grads())
    assert controller.observe()[drift] == 0.0
    for _ in range(4):
        controller.scale(optimizer, 0.1)  # four decades down
    controller.record_step(1.0, _grads())
    assert controller.observe()[drift] == pytest.approx(math.tanh(-4 / 3), rel=1e-5)
    controller.scale(optimizer, 1e12)  # clamped at max_lr = 1: six decades up, not twelve
    assert optimizer.param_groups[0]["lr"] == 1.0
    controller.record_step(1.0, _grads())
    assert controller.observe()[drift] == pytest.approx(math.tanh(2 / 3), rel=1e-5)


def test_feature_selection_picks_and_orders_the_features():
    names = ("loss_noise", "grad_cosine", "lr_drift")
    full, picked = (
        LRController(decision_interval=2),
        LRController(decision_interval=2, features=names),
    )
    for loss, g in [(1.0, 1.0), (0.8, 0.5), (0.9, -0.2), (0.5, 0.3)]:
        full.record_step(loss, _grads(g))
        picked.record_step(loss, _grads(g))
    expected = full.observe()[[FEATURE_NAMES.index(n) for n in names]]
    np.testing.assert_array_equal(picked.observe(), expected)
    assert resolve_features(None) == FEATURE_NAMES[:11]  # rate-only default
    assert resolve_features(None, batch=True) == FEATURE_NAMES[:13]


def test_version_one_policy_files_still_load_and_drive_the_scheduler(tmp_path, make_policy):
    """A file written before lr_drift existed reads the first ten features, as it was trained."""
    import json
    import struct

    path = save_policy(make_policy(seed=2, interval=2, features=FEATURES_V1), tmp_path / "v1.qlr")
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["qlr"])
    meta["feature_version"] = 1
    for key in ("spike_factor", "spike_cut"):  # version-1 files had no guard fields
        meta.pop(key)
    header["__metadata__"]["qlr"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])

    policy = load_policy(path)
    assert policy.metadata.feature_names == FEATURES_V1 and policy.metadata.spike_factor is None
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    scheduler = QLRScheduler(optimizer, policy=path)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(10):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step(loss)
    assert scheduler.decisions == 5 and scheduler.last_observation.shape == (10,)


def test_guard_and_features_survive_a_policy_file(tmp_path, make_policy):
    names = ("loss_change_block", "lr_drift")
    path = save_policy(make_policy(features=names, spike_factor=3.0), tmp_path / "g.qlr")
    policy = load_policy(path)
    assert policy.metadata.feature_names == names and policy.obs_dim == 2
    assert policy.metadata.spike_factor == 3.0 and policy.metadata.spike_cut == 0.5
    scheduler = QLRScheduler(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1), path)
    assert scheduler.controller.spike_factor == 3.0 and scheduler.controller.features == names


def test_a_bound_relative_to_the_start_stops_raising_at_that_multiple():
    controller = LRController(action_factors=(0.5, 1.0, 2.0), max_lr=1e4, max_lr_growth=100.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1e-3)
    for _ in range(10):  # 2**10 = 1024x asked for
        controller.scale(optimizer, 2.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # 100x the start
    controller.scale(optimizer, 0.5)  # lowering is never held back
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="max_lr_growth must be a number > 1"):
        LRController(max_lr_growth=0.5)


def test_the_rate_bounds_a_policy_was_trained_with_travel_in_its_file(tmp_path, make_policy):
    policy = make_policy()
    policy.metadata.max_lr, policy.metadata.max_lr_growth = 1e4, 1000.0
    path = save_policy(policy, tmp_path / "bounds.qlr")
    loaded = load_policy(path)
    assert (loaded.metadata.max_lr, loaded.metadata.max_lr_growth) == (1e4, 1000.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    scheduler = QLRScheduler(optimizer, policy=path)
    assert scheduler.controller.max_lr == 1e4 and scheduler.controller.max_lr_growth == 1000.0
    explicit = QLRScheduler(optimizer, policy=path, max_lr=5.0)
    assert explicit.controller.max_lr == 5.0
    assert QLRScheduler(optimizer, policy=make_policy()).controller.max_lr == 10.0  # older files


def test_a_controller_state_round_trip_continues_identically(tmp_path):
    """The controller saves what it owns (bounds, counters, batch size, held cuts, tracker)."""

    def make(**bounds):
        return LRController(
            decision_interval=3,
            spike_factor=2.0,
            batch_factors=(0.5, 1.0, 2.0),
            batch_size=8,
            max_batch_size=32,
            total_steps=40,
            **bounds,
        )

    def run(controller, optimizer, steps):
        seen = []
        for i in steps:
            loss = 1.0 + 0.1 * math.sin(i) + (9.0 if i == 10 else 0.0)
            controller.scale(optimizer, controller.record_step(loss, _grads(math.cos(i))))
            seen.append((reference_lr(optimizer), controller.batch_size, controller.last_cuts))
            if controller.decision_due:
                seen.append(controller.observe().tolist())
                controller.apply_action(optimizer, i % controller.n_actions)
        return seen

    reference = make(min_lr=1e-4, max_lr=1.0)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    run(reference, optimizer, range(11))  # the spike at step 10 is still queued
    torch.save(reference.state_dict(), tmp_path / "controller.pt")
    assert reference.held_cuts == ["spike"]
    restored = make()
    restored.load_state_dict(torch.load(tmp_path / "controller.pt", weights_only=True))
    assert (restored.min_lr, restored.max_lr, restored.held_cuts) == (1e-4, 1.0, ["spike"])
    copy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=reference_lr(optimizer))
    reference.tracker.restart_samples()  # what a restore does to the samples in progress
    assert run(restored, copy, range(11, 40)) == run(reference, optimizer, range(11, 40))
    assert restored.examples == reference.examples and restored.blocks == reference.blocks
