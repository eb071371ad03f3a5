"""The held-out folds: every family in one fold by kind, and distributions over some folds."""

from __future__ import annotations

import hashlib
import math
import pickle

import numpy as np
import pytest
import torch

from qlr.envs import LearningRateEnv
from qlr.envs.distributions import (
    DISTRIBUTIONS,
    FOLD_OF,
    FOLD_ONLY_FAMILIES,
    FOLD_SPLITS,
    FOLDS,
    HELD_OUT_FAMILIES,
    TRAIN_FAMILIES,
    ProblemDistribution,
    fold_distribution,
    make_distribution,
    other_folds,
)
from qlr.envs.problems import FAMILIES

NAMED_SPLITS = ("train", "val", "test", "train_stochastic", "val_stochastic", "test_stochastic")

# The argument that grows from train through val to test, per family (wine_softmax has none:
# its data are fixed, its instances differ by init only).
SIZE_KEY = {
    **dict.fromkeys(FOLDS["analytic"], "dim"),
    "least_squares": "dim",
    "logistic": "dim",
    "sparse_logistic": "dim",
    "separable": "dim",
    "mlp": "hidden",
    "digits_mlp": "hidden",
    "cancer_mlp": "hidden",
    "autoencoder": "hidden",
    "label_noise": "hidden",
    "digits_cnn": "channels",
    "cnn_wd": "channels",
    "gru_seq": "hidden",
    "lstm_lm": "hidden",
    "rnn_algorithmic": "hidden",
    "char_rnn_text": "hidden",
    "lm_transformer": "d_model",
    "transformer_classifier": "d_model",
    "char_lm_text": "d_model",
    "matrix_completion": "rows",
    "deep_linear": "hidden",
}


def families_seen(dist: ProblemDistribution, seed: int = 0, limit: int = 400) -> set[str]:
    rng, seen = np.random.default_rng(seed), set()
    for _ in range(limit):
        seen.add(dist.sample(rng).name)
        if seen == set(dist.families):
            break
    return seen


# --------------------------------------------------------------------------- the fold table


def test_every_family_lies_in_exactly_one_fold():
    members = [family for families in FOLDS.values() for family in families]
    assert len(members) == len(set(members))  # no family in two folds
    assert set(members) == set(FAMILIES)  # and none left out
    assert all(FOLD_OF[family] == fold for fold, fs in FOLDS.items() for family in fs)
    assert set(FOLD_OF) == set(FAMILIES)
    assert set(SIZE_KEY) | {"wine_softmax"} == set(FAMILIES)


def test_folds_group_by_kind():
    assert set(FOLDS) == {
        "analytic",
        "linear",
        "mlp",
        "cnn",
        "recurrent",
        "transformer",
        "factorization",
    }
    assert all(len(families) >= 2 for families in FOLDS.values())  # each fold a kind, not one net
    assert FOLD_OF["quadratic"] == FOLD_OF["ackley"] == "analytic"
    assert FOLD_OF["digits_cnn"] == FOLD_OF["cnn_wd"] == "cnn"
    assert FOLD_OF["lm_transformer"] == FOLD_OF["char_lm_text"] == "transformer"
    assert FOLD_OF["char_rnn_text"] == FOLD_OF["gru_seq"] == "recurrent"
    assert FOLD_OF["deep_linear"] == FOLD_OF["matrix_completion"] == "factorization"


def test_the_new_families_enter_no_named_split_and_the_named_splits_are_unchanged():
    assert set(FOLD_ONLY_FAMILIES) == set(FAMILIES) - set(TRAIN_FAMILIES) - set(HELD_OUT_FAMILIES)
    for name in NAMED_SPLITS:
        assert not set(FOLD_ONLY_FAMILIES) & set(DISTRIBUTIONS[name].families), name
    # the named splits are exactly what training recipes and recorded results were made with
    expected = {
        "train": "21c82c77c54bdb1b",
        "val": "7f5775d1d4b06216",
        "test": "f737aa3a3833af60",
        "train_stochastic": "8f120f9c9388eabc",
        "val_stochastic": "8e9008bc1f10cb18",
        "test_stochastic": "e1c130bf854c26df",
    }
    for name, digest in expected.items():
        spec = repr(DISTRIBUTIONS[name].families).encode()
        assert hashlib.sha256(spec).hexdigest()[:16] == digest, name
    # each new family is still available on its own, at its defaults
    for family in FOLD_ONLY_FAMILIES:
        assert DISTRIBUTIONS[family].families == {family: (1.0, {})}


# --------------------------------------------------------------------------- fold distributions


@pytest.mark.parametrize("split", FOLD_SPLITS)
@pytest.mark.parametrize("fold", list(FOLDS))
def test_a_fold_distribution_draws_all_and_only_its_families(fold, split):
    dist = fold_distribution(fold, split)
    assert set(dist.families) == set(FOLDS[fold])
    assert families_seen(dist, seed=FOLD_SPLITS.index(split)) == set(FOLDS[fold])
    assert dist.name == f"folds:{fold}:{split}"


def test_several_folds_and_the_leave_folds_out_complement():
    held = ["recurrent", "transformer"]
    rest = other_folds(held)
    assert set(rest) == set(FOLDS) - set(held) and list(rest) == [f for f in FOLDS if f in rest]
    train, score = fold_distribution(rest, "train"), fold_distribution(held, "test")
    assert not set(train.families) & set(score.families)
    assert set(train.families) | set(score.families) == set(FAMILIES)
    rng = np.random.default_rng(0)
    drawn = {train.sample(rng).name for _ in range(60)}
    assert drawn <= set(train.families) and not drawn & set(score.families)
    # order and repeats in the request do not matter
    assert (
        fold_distribution(["mlp", "cnn", "mlp"]).families
        == fold_distribution(["cnn", "mlp"]).families
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_instances_grow_from_the_train_folds_through_val_to_test(family):
    fold = FOLD_OF[family]
    kwargs = [fold_distribution(fold, split).families[family][1] for split in FOLD_SPLITS]
    assert all(kw["scale"] == (1e-3, 1e3) for kw in kwargs)
    if family == "wine_softmax":  # the same data at every size: only the batches differ
        assert [{k: v for k, v in kw.items() if k != "batch_size"} for kw in kwargs[1:]] == [
            {k: v for k, v in kwargs[0].items() if k != "batch_size"}
        ] * 2
        return
    key = SIZE_KEY[family]
    (lo_train, hi_train), (lo_val, hi_val), (lo_test, hi_test) = (kw[key] for kw in kwargs)
    assert lo_train <= hi_train <= lo_val <= hi_val <= lo_test <= hi_test, family
    assert hi_train < lo_test, family
    # and the instances drawn follow
    sizes = []
    for kw in kwargs:
        rng = np.random.default_rng(0)
        sizes.append([FAMILIES[family](rng, **kw).dim for _ in range(2)])
    assert max(sizes[0]) < min(sizes[2]), (family, sizes)


def test_the_named_splits_families_keep_their_ranges_in_the_folds():
    # a training family's fold splits are its named splits; a held-out family's fold test split
    # is the named test split (train and val sizes below it are new)
    for split in ("train", "val", "test"):
        named = DISTRIBUTIONS[split].families
        for family in TRAIN_FAMILIES:
            assert fold_distribution(FOLD_OF[family], split).families[family] == named[family]
    for family in HELD_OUT_FAMILIES:
        got = fold_distribution(FOLD_OF[family], "test").families[family]
        assert got == DISTRIBUTIONS["test"].families[family], family


@pytest.mark.parametrize("split", FOLD_SPLITS)
def test_fold_instances_build_and_minibatches_are_smaller_than_the_data(split):
    dist = fold_distribution(list(FOLDS), split)
    rng = np.random.default_rng(1)
    for family, (_, kwargs) in dist.families.items():
        batches = kwargs.get("batch_size")
        problem = FAMILIES[family](rng, **kwargs)
        assert math.isfinite(problem.loss()) and problem.loss() >= 0, family
        if batches is not None:
            assert None in batches  # full batch and minibatches, as in the named splits
            assert max(b for b in batches if b) < problem.n, (family, split)


@pytest.mark.parametrize("spec", ["folds:analytic,factorization:val", "folds-except:cnn:test"])
def test_fold_distributions_pickle_and_sample_deterministically(spec):
    dist = make_distribution(spec)
    thawed = pickle.loads(pickle.dumps(dist))
    a, b = thawed.sample(np.random.default_rng(5)), dist.sample(np.random.default_rng(5))
    assert a.info() == b.info()
    assert all(torch.equal(p, q) for p, q in zip(a.params, b.params, strict=True))


# --------------------------------------------------------------------------- names


def test_make_distribution_reads_fold_specs():
    dist = make_distribution("folds:cnn,mlp")
    assert dist.families == fold_distribution(["cnn", "mlp"], "train").families
    assert make_distribution("folds:cnn:test").families == fold_distribution("cnn", "test").families
    rest = make_distribution("folds-except:cnn,recurrent:val")
    assert rest.families == fold_distribution(other_folds(["cnn", "recurrent"]), "val").families
    assert make_distribution("folds: cnn , mlp").families == dist.families
    assert make_distribution("train") is DISTRIBUTIONS["train"]  # names come first


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("folds:cnns", "unknown folds"),
        ("folds:cnn:holdout", "unknown split 'holdout'"),
        ("folds:", "unknown distribution"),
        ("folds:,", "unknown folds"),
        ("folds-except:" + ",".join(FOLDS), "leaves nothing"),
        ("fold:cnn", "unknown distribution or family 'fold:cnn'.*folds:<fold>"),
    ],
)
def test_bad_fold_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        make_distribution(spec)


def test_fold_distribution_checks_its_arguments():
    with pytest.raises(ValueError, match="valid folds"):
        fold_distribution([])
    with pytest.raises(ValueError, match="valid splits"):
        fold_distribution("cnn", "train_stochastic")
    with pytest.raises(ValueError, match="leaves nothing"):
        other_folds(list(FOLDS))


def test_the_environment_trains_on_a_fold_spec():
    env = LearningRateEnv(problem="folds:factorization,linear:test", horizon=2)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        assert FOLD_OF[info["problem"]] in ("factorization", "linear")
        for _ in range(2):
            obs, reward, terminated, truncated, info = env.step(1)
            assert env.observation_space.contains(obs) and np.isfinite(reward)
        assert truncated
