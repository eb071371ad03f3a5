"""The model families (transformer LM, GRU, CNN; held out: residual MLP, softmax, LSTM LM).

Also the copy semantics every data family relies on: a deep copy of a problem draws the same
minibatches as the original from then on.
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from qlr.envs import LearningRateEnv
from qlr.envs.distributions import (
    DISTRIBUTIONS,
    HELD_OUT_FAMILIES,
    MODEL_WEIGHT,
    TRAIN_FAMILIES,
)
from qlr.envs.problems import (
    DIGITS_TRAIN_SIZE,
    FAMILIES,
    Minibatcher,
    Problem,
    TransformerLM,
    load_digits_split,
    load_standardised,
    markov_tokens,
    memory_task,
    sample_digits_cnn,
    sample_lm_transformer,
    sample_wine_softmax,
)

F64 = torch.float64
NEW_TRAIN = ("lm_transformer", "gru_seq", "digits_cnn")
NEW_HELD_OUT = ("cancer_mlp", "wine_softmax", "lstm_lm")
NEW = NEW_TRAIN + NEW_HELD_OUT

# Small instances: the whole module must stay fast.
SMALL = {
    "lm_transformer": dict(d_model=8, vocab=8, context=8, n=48, branching=2),
    "gru_seq": dict(hidden=8, features=4, length=8, n=48),
    "digits_cnn": dict(channels=2, n=96),
    "cancer_mlp": dict(hidden=8, blocks=1),
    "wine_softmax": dict(),
    "lstm_lm": dict(hidden=8, embed=4, vocab=8, context=8, n=48, branching=2),
}
DATA_FAMILIES = ("least_squares", "logistic", "mlp", "digits_mlp", *NEW)
OLD_SMALL = {
    "least_squares": dict(dim=5, n=64),
    "logistic": dict(dim=5, n=64),
    "mlp": dict(features=3, hidden=8, n=64),
    "digits_mlp": dict(hidden=8),
}


def make(family: str, seed: int = 0, **kwargs) -> Problem:
    return FAMILIES[family](np.random.default_rng(seed), **{**SMALL[family], **kwargs})


def flat_params(problem: Problem) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in problem.params])


def sgd_losses(problem: Problem, steps: int, lr: float = 0.05) -> list[float]:
    """Losses of `steps` plain SGD steps, then the full loss (no optimizer state to copy)."""
    losses = []
    for _ in range(steps):
        losses.append(problem.loss_and_grad())
        with torch.no_grad():
            for p in problem.params:
                p.sub_(lr * p.grad)
    return [*losses, problem.loss()]


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("batch_size", [None, 8])
def test_same_seed_gives_the_identical_instance_and_leaves_torch_rng_alone(family, batch_size):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = make(family, 4, batch_size=batch_size), make(family, 4, batch_size=batch_size)
    c = make(family, 5, batch_size=batch_size)
    assert a.name == family and a.info() == b.info()
    assert torch.equal(flat_params(a), flat_params(b))
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    # another seed: another init (the data sets of scikit-learn stay the same)
    assert a.dim != c.dim or not torch.equal(flat_params(a), flat_params(c))
    assert sgd_losses(a, 4) == sgd_losses(b, 4)
    assert torch.equal(state, torch.get_rng_state())  # construction and steps draw nothing


@pytest.mark.parametrize("family", NEW)
def test_loss_is_finite_positive_and_every_parameter_gets_a_finite_gradient(family):
    problem = make(family, 1, scale=3.0)
    value = problem.loss_and_grad()
    assert math.isfinite(value) and value > 0
    assert math.isfinite(problem.loss()) and problem.loss() > 0
    for name, p in problem.model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in problem.params) > 0
    # the full-batch gradient is the gradient of what loss() reports
    assert problem.loss() == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("family", NEW)
def test_a_few_dozen_adam_steps_lower_the_full_loss(family):
    problem = make(family, 2)
    start = problem.loss()
    optimizer = torch.optim.Adam(problem.params, lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        problem.loss_and_grad()
        optimizer.step()
    assert problem.loss() < 0.8 * start, family


# --------------------------------------------------------------------------- minibatches


@pytest.mark.parametrize("family", NEW)
def test_minibatch_variant_draws_batches_of_the_set_size(family):
    problem = make(family, 0, batch_size=8)
    assert problem.stochastic and problem.batch_size == 8
    before = problem.examples_seen
    losses = [problem.loss_and_grad() for _ in range(3)]
    assert problem.examples_seen - before == 3 * 8
    assert len(set(losses)) == 3  # different batches, different losses
    problem.set_batch_size(16)
    before = problem.examples_seen
    problem.loss_and_grad()
    assert problem.batch_size == 16 and problem.examples_seen - before == 16
    assert problem.loss() == problem.loss()  # the full objective stays deterministic


def full_gradient(problem: Problem) -> torch.Tensor:
    """Autograd gradient of the objective on all data, written independently of the class."""
    params = dict(problem.model.named_parameters())
    values = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    logits = torch.func.functional_call(problem.model, values, (problem.X,))
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), problem.y.reshape(-1)
    )
    grads = torch.autograd.grad(loss * problem.scale, list(values.values()))
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("family", ["lm_transformer", "gru_seq", "digits_cnn", "lstm_lm"])
def test_one_epoch_of_minibatch_gradients_averages_to_the_full_gradient(family):
    # n = 96 = 6 batches of 16: an epoch visits every example exactly once.
    problem = make(family, 1, n=96, batch_size=16, scale=2.0, dtype=F64)
    total = torch.zeros(problem.dim, dtype=F64)
    for _ in range(6):
        problem.loss_and_grad()
        total += torch.cat([p.grad.reshape(-1) for p in problem.params])
    torch.testing.assert_close(total / 6, full_gradient(problem), rtol=1e-6, atol=1e-10)


# --------------------------------------------------------------------------- copies


@pytest.mark.parametrize("family", DATA_FAMILIES)
def test_a_deep_copy_continues_with_bit_identical_losses(family):
    kwargs = {**SMALL, **OLD_SMALL}[family]
    problem = FAMILIES[family](np.random.default_rng(3), **kwargs, batch_size=8)
    sgd_losses(problem, 5)  # part-way through an epoch, the generator advanced
    twin = copy.deepcopy(problem)
    assert twin._batches.generator is not problem._batches.generator
    assert all(a is not b for a, b in zip(twin.params, problem.params, strict=True))
    # 12 more batches: past the end of an epoch on the small data sets
    assert sgd_losses(problem, 12) == sgd_losses(twin, 12)
    assert torch.equal(flat_params(problem), flat_params(twin))


def test_minibatcher_copies_and_pickles_its_generator_state():
    batches = Minibatcher(10, 3, torch.Generator().manual_seed(0))
    batches.next()
    twin, thawed = copy.deepcopy(batches), pickle.loads(pickle.dumps(batches))
    ahead = [batches.next().tolist() for _ in range(7)]  # crosses two epochs
    assert [twin.next().tolist() for _ in range(7)] == ahead
    assert [thawed.next().tolist() for _ in range(7)] == ahead
    # the copies drew on their own generators: the original's state moved on alone
    assert batches.next().tolist() == twin.next().tolist()


# --------------------------------------------------------------------------- data and models


def test_markov_tokens_follow_a_sparse_chain():
    rng = np.random.default_rng(0)
    seq = markov_tokens(rng, n=200, length=12, vocab=10, order=1, branching=3)
    assert seq.shape == (200, 12) and seq.dtype == np.int64
    assert seq.min() >= 0 and seq.max() < 10
    successors = {}
    for a, b in zip(seq[:, :-1].ravel(), seq[:, 1:].ravel(), strict=True):
        successors.setdefault(int(a), set()).add(int(b))
    assert max(len(s) for s in successors.values()) <= 3
    # second order: the pair of previous tokens, not the last one alone, limits the successors
    seq2 = markov_tokens(rng, n=400, length=12, vocab=4, order=2, branching=1)
    pairs = {}
    for row in seq2:
        for t in range(2, 12):
            pairs.setdefault((int(row[t - 2]), int(row[t - 1])), set()).add(int(row[t]))
    assert all(len(s) == 1 for s in pairs.values())


def test_markov_tokens_rejects_a_branching_above_the_vocabulary():
    with pytest.raises(ValueError, match="branching must lie in"):
        markov_tokens(np.random.default_rng(0), 4, 5, vocab=3, order=1, branching=4)


def test_first_marker_labels_name_the_marker_seen_first():
    x, y, classes = memory_task(np.random.default_rng(0), "first_marker", 64, 10, 5)
    assert classes == 3 and x.shape == (64, 10, 5) and y.shape == (64, 10)
    tokens = x.argmax(-1)
    for row, labels in zip(tokens, y, strict=True):
        first = None
        for t, token in enumerate(row):
            if first is None and token in (0, 1):
                first = int(token) + 1
            assert labels[t] == (first or 0)
    assert set(np.unique(y)) == {0, 1, 2}


def test_sum_sign_labels_are_the_sign_of_the_running_sum():
    # one feature: the random projection is a single weight, so the labels are the sign of
    # the running sum of the inputs, or of its negation
    x, y, classes = memory_task(np.random.default_rng(1), "sum_sign", 200, 12, 1)
    assert classes == 2 and x.shape == (200, 12, 1) and y.shape == (200, 12)
    running = np.cumsum(x[..., 0], axis=1)
    assert np.array_equal(y, running > 0) or np.array_equal(y, running < 0)
    assert 0.3 < y.mean() < 0.7


def test_memory_task_and_data_set_names_are_checked():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown task 'parity'"):
        memory_task(np.random.default_rng(0), "parity", 4, 4, 4)
    with pytest.raises(ValueError, match="first_marker needs features >= 3"):
        memory_task(np.random.default_rng(0), "first_marker", 4, 4, 2)
    with pytest.raises(ValueError, match="unknown data set 'iris'"):
        load_standardised("iris")
    with pytest.raises(ValueError, match="not a multiple of heads"):
        TransformerLM(8, 4, 10, layers=1, heads=4, mlp_ratio=2, tied=True, rng=rng, dtype=F64)


def test_transformer_is_causal_and_ties_its_head_on_request():
    tied = sample_lm_transformer(np.random.default_rng(0), d_model=8, vocab=8, n=4, tied=True)
    untied = sample_lm_transformer(np.random.default_rng(0), d_model=8, vocab=8, n=4, tied=False)
    assert untied.dim - tied.dim == 8 * 8 and tied.model.head is None
    tokens = tied.X[:2].clone()
    logits = tied.model(tokens)
    tokens[:, -1] = (tokens[:, -1] + 1) % 8  # change the last input token only
    changed = tied.model(tokens)
    torch.testing.assert_close(changed[:, :-1], logits[:, :-1])  # earlier steps cannot see it
    assert not torch.allclose(changed[:, -1], logits[:, -1])
    assert torch.equal(tied.y[:, :-1], tied.X[:, 1:])  # targets are the next tokens


def test_digits_cnn_uses_the_training_images_only():
    problem = sample_digits_cnn(np.random.default_rng(0), channels=3, conv_layers=2, n=10**6)
    X_train, y_train, _, _ = load_digits_split()
    assert problem.n == DIGITS_TRAIN_SIZE
    assert torch.equal(problem.X.reshape(problem.n, 64), X_train)
    assert torch.equal(problem.y, y_train)
    convs = [m for m in problem.model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [3, 6]


def test_standardised_data_sets_and_the_wine_l2_term():
    for name, shape, classes in (("breast_cancer", (569, 30), 2), ("wine", (178, 13), 3)):
        X, y = load_standardised(name)
        assert X.shape == shape and X.dtype == torch.float32 and y.dtype == torch.int64
        assert set(y.tolist()) == set(range(classes))
        torch.testing.assert_close(X.mean(0), torch.zeros(shape[1]), atol=1e-5, rtol=0)
        assert load_standardised(name)[0] is X
    problem = sample_wine_softmax(np.random.default_rng(0), l2=0.1, scale=2.0)
    W = problem.model.weight.detach()
    ce = torch.nn.functional.cross_entropy(problem.model(problem.X), problem.y).item()
    expected = 2.0 * (ce + 0.05 * (W * W).sum().item())
    assert problem.loss() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- distributions, env


def test_new_families_sit_where_they_belong():
    assert set(NEW_TRAIN) <= set(TRAIN_FAMILIES) and set(NEW_HELD_OUT) <= set(HELD_OUT_FAMILIES)
    for name in ("train", "val", "test", "train_stochastic", "val_stochastic", "test_stochastic"):
        families = DISTRIBUTIONS[name].families
        assert set(NEW_TRAIN) <= set(families), name
        assert bool(set(NEW_HELD_OUT) & set(families)) == name.startswith("test"), name
        if name.startswith("test"):
            assert set(NEW_HELD_OUT) <= set(families)
        for family in NEW_TRAIN:
            assert families[family][0] == MODEL_WEIGHT
    for family in NEW:
        assert set(DISTRIBUTIONS[family].families) == {family}


@pytest.mark.parametrize("name", ["train_stochastic", "val_stochastic", "test_stochastic"])
def test_stochastic_distributions_give_minibatch_instances_of_the_new_families(name):
    # the data sets must hold more examples than the largest minibatch the split draws
    rng = np.random.default_rng(0)
    for family, (_, kwargs) in DISTRIBUTIONS[name].families.items():
        if family in NEW:
            for _ in range(4):
                problem = FAMILIES[family](rng, **kwargs)
                assert problem.stochastic and problem.batch_size < problem.n, (name, family)


@pytest.mark.parametrize("family", NEW_TRAIN)
def test_instances_grow_from_train_through_val_to_test(family):
    key = {"lm_transformer": "d_model", "gru_seq": "hidden", "digits_cnn": "channels"}[family]
    sizes = {}
    for split in ("train", "val", "test"):
        kwargs = DISTRIBUTIONS[split].families[family][1]
        rng = np.random.default_rng(0)
        sizes[split] = [FAMILIES[family](rng, **kwargs).info()[key] for _ in range(4)]
    assert max(sizes["train"]) <= min(sizes["val"]) and max(sizes["val"]) <= min(sizes["test"])
    assert max(sizes["train"]) < min(sizes["test"])


@pytest.mark.parametrize("family", NEW)
def test_env_checkers_pass_on_each_new_family(family):
    gym_check_env(LearningRateEnv(problem=family), skip_render_check=True)
    sb3_check_env(LearningRateEnv(problem=family), warn=False)
