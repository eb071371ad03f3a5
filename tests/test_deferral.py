"""Deferring to the slope rule, and ensembles: the rule acts unless the network is sure."""

import json

import numpy as np
import pytest
import torch

from qlr import QLRScheduler
from qlr.deferral import Deferral
from qlr.ensemble import combine
from qlr.policy import PolicyFileError, load_policy, save_policy
from qlr.rules import slope_rule

FACTORS = (0.5, 2**-0.5, 1.0, 2**0.5, 2.0)  # the shipped default's: the rule's are among them
FEATURES = load_policy("default").metadata.feature_names  # the slope r among them
SLOPE_AT = FEATURES.index("update_slope")


@pytest.fixture
def member(make_policy):
    def make(seed):
        return make_policy(
            hidden=(8, 8), factors=FACTORS, seed=seed, features=FEATURES, spike_factor=10.0
        )

    return make


def observations(n=500, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, size=(n, len(FEATURES))).astype(np.float32)
    obs[:, SLOPE_AT] = rng.uniform(-1, 1, size=n)  # r from -2 to 2: every branch of the rule
    return obs


def rule_factor(obs):
    rule = slope_rule()
    return rule.action_factors[rule.act(obs[[SLOPE_AT]])]


def test_an_unreachable_margin_makes_the_policy_the_slope_rule(member):
    policy = combine([member(0)], Deferral(margin=1e9))
    obs = observations()
    chosen = [FACTORS[policy.act(x)] for x in obs]
    assert chosen == pytest.approx([rule_factor(x) for x in obs])
    assert len(set(chosen)) == 3  # the rule lowered, held and raised


def test_a_zero_margin_single_network_acts_greedily(member):
    greedy = member(1)
    deferring = combine([greedy], Deferral(margin=0.0))
    obs = observations()
    assert [deferring.act(x) for x in obs] == [greedy.act(x) for x in obs]


def test_a_margin_keeps_the_rule_exactly_where_the_advantage_is_small(member):
    network = member(2)
    margin = 0.5
    policy = combine([network], Deferral(margin=margin))
    indices = Deferral(margin=margin).rule_indices(FACTORS)
    left = 0
    for x in observations():
        q = network.q_values(x)
        rule = Deferral(margin=margin).rule_action(x[SLOPE_AT], indices)
        expected = int(np.argmax(q)) if q.max() - q[rule] > margin else rule
        assert policy.act(x) == expected
        left += expected != rule
    assert 0 < left < 500  # some decisions leave the rule and some keep it


def test_an_ensemble_hands_disagreements_to_the_rule(member):
    a, b = member(3), member(4)
    ensemble = combine([a, b], Deferral(margin=0.0))
    disagreements = 0
    for x in observations():
        if a.act(x) != b.act(x):
            disagreements += 1
            assert FACTORS[ensemble.act(x)] == pytest.approx(rule_factor(x))
        else:
            assert ensemble.act(x) == a.act(x)
    assert disagreements > 0
    heads = ensemble.head_q_values(observations(3))
    assert heads.shape == (3, 2, len(FACTORS))
    np.testing.assert_allclose(heads[:, 1], b.q_values(observations(3)), rtol=1e-5, atol=1e-5)


def test_a_combined_file_round_trips_and_records_its_members(member, tmp_path):
    policy = combine([member(5), member(6), member(7)], Deferral(margin=0.25))
    path = save_policy(policy, tmp_path / "ensemble.qlr")
    loaded = load_policy(path)
    assert loaded.heads == 3 and loaded.metadata.defer == Deferral(margin=0.25)
    assert loaded.metadata.hidden_sizes == (24, 24)
    assert len(loaded.metadata.extra["members"]) == 3
    obs = observations(50)
    assert [loaded.act(x) for x in obs] == [policy.act(x) for x in obs]
    assert "heads=3" in repr(loaded) and "defer_margin=0.25" in repr(loaded)


def test_a_file_whose_rule_factor_is_not_an_action_is_refused(make_policy, tmp_path):
    policy = combine([make_policy(hidden=(4,), factors=FACTORS, features=FEATURES)])
    path = save_policy(policy, tmp_path / "p.qlr")
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = json.loads(header["__metadata__"]["qlr"])
    meta["defer_to_rule"] = {"margin": 0.1, "up": 3.0}
    header["__metadata__"]["qlr"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(data[8 + header_len :]))
    with pytest.raises(PolicyFileError, match="cannot defer to the rule: the rule's factor 3"):
        load_policy(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": -0.1}, "margin must be a finite number >= 0"),
        ({"margin": 0.1, "raise_above": -1.0}, "lower_below < raise_above"),
        ({"margin": 0.1, "down": 1.5}, "need up > 1 and 0 < down < 1"),
    ],
)
def test_bad_deferrals_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Deferral(**kwargs)


def test_members_that_differ_are_refused(make_policy, member):
    with pytest.raises(ValueError, match="combine needs at least one policy"):
        combine([])
    other = make_policy(hidden=(8, 8), factors=(0.5, 1.0, 2.0), features=FEATURES)
    with pytest.raises(ValueError, match="member 1 differs from member 0 in action_factors"):
        combine([member(0), other])
    with pytest.raises(ValueError, match="member 0 is already an ensemble of 2 heads"):
        combine([combine([member(0), member(1)])])
    rate_only = make_policy(hidden=(4,), factors=FACTORS)  # reads no update_slope
    with pytest.raises(ValueError, match="needs a rate-only policy that reads 'update_slope'"):
        combine([rate_only], Deferral(margin=0.1))


def test_the_scheduler_follows_the_rule_through_a_deferring_policy(member):
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 1)
    x, y = torch.randn(64, 10), torch.randn(64, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    deferring = combine([member(8)], Deferral(margin=1e9))
    scheduler = QLRScheduler(optimizer, policy=deferring)
    for _ in range(100):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        decided = scheduler.decisions
        scheduler.step(loss)
        if scheduler.decisions > decided:
            observed = np.asarray(scheduler.last_observation, dtype=np.float32)
            factor = optimizer.param_groups[0]["lr"] / lr
            assert factor == pytest.approx(rule_factor(observed))
    assert optimizer.param_groups[0]["lr"] > 1e-4 * 2  # a rate far too low: the rule raised it


def test_qlr_combine_writes_a_deferring_ensemble_and_names_a_bad_member(member, tmp_path, capsys):
    from qlr.agents.cli import main

    paths = [save_policy(member(seed), tmp_path / f"m{seed}.qlr") for seed in (0, 1)]
    out = tmp_path / "ensemble.qlr"
    assert main(["combine", str(out), *map(str, paths), "--defer-margin", "0.1"]) == 0
    combined = load_policy(out)
    assert combined.heads == 2 and combined.metadata.defer == Deferral(margin=0.1)
    assert combined.metadata.spike_factor == 10.0  # the members' guard, kept
    assert main(["combine", str(out), str(paths[0]), "--no-spike-guard"]) == 0
    bare = load_policy(out)
    assert bare.metadata.spike_factor is None and bare.metadata.defer is None
    assert (
        QLRScheduler(
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), policy=bare
        ).controller.spike_factor
        is None
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["combine", str(out), str(tmp_path / "missing.qlr")])
    assert exit_info.value.code == 2
    assert "missing.qlr" in capsys.readouterr().err
