"""The model families (transformer LM, GRU, CNN; held out: residual MLP, softmax, LSTM LM).

Also the copy semantics every data family relies on: a deep copy of a problem draws the same
minibatches as the original from then on; and, at the end, the families of the held-out folds.
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
    FOLD_ONLY_FAMILIES,
    HELD_OUT_FAMILIES,
    MODEL_WEIGHT,
    TRAIN_FAMILIES,
)
from qlr.envs.optimizers import make_optimizer
from qlr.envs.problems import (
    ALGORITHMIC_TASKS,
    CHAR_VOCAB,
    DIGITS_TRAIN_SIZE,
    FAMILIES,
    STDLIB_TEXT_FILES,
    Minibatcher,
    Problem,
    TransformerLM,
    algorithmic_task,
    load_digits_split,
    load_standardised,
    markov_tokens,
    memory_task,
    sample_digits_cnn,
    sample_label_noise,
    sample_lm_transformer,
    sample_separable,
    sample_sparse_logistic,
    sample_wine_softmax,
    sequence_classes,
    stdlib_text,
    text_windows,
)
from qlr.envs.problems.datasets import IGNORE

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


# --------------------------------------------------------------------------- the folds' families
# Families added for the held-out folds protocol (qlr.envs.distributions.FOLDS): CNN with a norm
# layer, autoencoder, matrix completion, deep linear net, recurrent nets on algorithmic tasks,
# transformer classifier, character LMs on standard-library text, sparse and separable logistic
# regression, MLP on noisy labels.

FOLD_SMALL = {
    "cnn_wd": dict(channels=4, n=96, norm="group"),
    "autoencoder": dict(hidden=16, bottleneck=4, n=96),
    "matrix_completion": dict(rows=12, cols=10, rank=2),
    "deep_linear": dict(dim=4, hidden=8, depth=5, n=96),
    "rnn_algorithmic": dict(hidden=16, length=4, n=96),
    "transformer_classifier": dict(d_model=16, vocab=8, context=8, n=96),
    "char_lm_text": dict(d_model=16, context=8, n=96),
    "char_rnn_text": dict(hidden=16, embed=8, context=8, n=96),
    "sparse_logistic": dict(dim=256, n=96),
    "separable": dict(dim=5, n=96),
    "label_noise": dict(hidden=16, n=96),
}
# (optimizer, rate, kwargs, bound): 50 steps must take the full loss below bound * start. The
# bounds leave a margin of 1.5-10x over what seeds 0-3 reach; a problem whose gradient is not
# that of its loss, or whose targets carry no signal, stays far above them.
TRAINS = [
    ("cnn_wd", "momentum_wd", 0.05, dict(norm="batch"), 0.1),
    ("cnn_wd", "momentum_wd", 0.05, dict(norm="group"), 0.1),
    ("autoencoder", "adamw", 1e-2, dict(data="digits"), 0.8),
    ("autoencoder", "adamw", 1e-2, dict(data="breast_cancer"), 0.6),
    ("matrix_completion", "adam", 3e-2, dict(noise=0.0), 0.1),
    ("deep_linear", "nesterov", 1e-2, {}, 0.2),
    ("rnn_algorithmic", "adam", 3e-2, dict(task="copy", cell="gru"), 0.8),
    ("rnn_algorithmic", "adam", 3e-2, dict(task="parity", cell="lstm", length=5), 0.3),
    ("rnn_algorithmic", "adam", 3e-2, dict(task="addition", cell="rnn", length=5), 0.4),
    ("transformer_classifier", "adamw", 1e-2, dict(task="majority"), 0.2),
    ("transformer_classifier", "adamw", 1e-2, dict(task="order"), 0.9),
    ("char_lm_text", "adamw95_clip", 1e-2, {}, 0.7),
    ("char_rnn_text", "adam", 1e-2, {}, 0.8),
    ("sparse_logistic", "adagrad", 0.5, {}, 0.4),
    ("separable", "sgd", 1.0, {}, 0.4),
    ("label_noise", "adam", 1e-2, {}, 0.4),
]


def make_fold(family: str, seed: int = 0, **kwargs) -> Problem:
    return FAMILIES[family](np.random.default_rng(seed), **{**FOLD_SMALL[family], **kwargs})


def test_the_folds_families_are_appended_after_the_older_ones():
    assert tuple(FAMILIES)[: len(TRAIN_FAMILIES) + len(HELD_OUT_FAMILIES)] == (
        "quadratic",
        "rosenbrock",
        "rastrigin",
        "ackley",
        "quartic",
        "least_squares",
        "logistic",
        "mlp",
        "digits_mlp",
        "lm_transformer",
        "gru_seq",
        "digits_cnn",
        "cancer_mlp",
        "wine_softmax",
        "lstm_lm",
    )
    assert tuple(FAMILIES)[15:] == FOLD_ONLY_FAMILIES
    assert set(FOLD_SMALL) == set(FOLD_ONLY_FAMILIES)


@pytest.mark.parametrize("family", FOLD_ONLY_FAMILIES)
@pytest.mark.parametrize("batch_size", [None, 8])
def test_fold_family_is_deterministic_and_leaves_torch_rng_alone(family, batch_size):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = make_fold(family, 4, batch_size=batch_size), make_fold(family, 4, batch_size=batch_size)
    c = make_fold(family, 5, batch_size=batch_size)
    assert a.name == family and a.info() == b.info()
    assert torch.equal(flat_params(a), flat_params(b))
    data = ("rows", "cols", "values") if family == "matrix_completion" else ("X", "y")
    data = ("X", "labels") if family in ("sparse_logistic", "separable") else data
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in data)
    assert a.stochastic == (batch_size is not None)
    # another seed, another instance: other data or another init
    assert a.dim != c.dim or not (
        torch.equal(flat_params(a), flat_params(c))
        and all(torch.equal(getattr(a, k), getattr(c, k)) for k in data)
    )
    assert sgd_losses(a, 4, lr=0.01) == sgd_losses(b, 4, lr=0.01)
    assert torch.equal(state, torch.get_rng_state())  # construction and steps draw nothing


@pytest.mark.parametrize("family", FOLD_ONLY_FAMILIES)
def test_fold_family_is_float32_with_finite_loss_and_gradients(family):
    problem = make_fold(family, 1, scale=3.0)
    assert all(p.dtype == torch.float32 and p.is_leaf and p.requires_grad for p in problem.params)
    value = problem.loss_and_grad()
    assert math.isfinite(value) and value > 0
    assert problem.loss() == pytest.approx(value, rel=1e-6)  # full batch: the same objective
    for p in problem.params:
        assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all()
    assert sum(p.grad.abs().sum() for p in problem.params) > 0
    assert problem.info()["scale"] == 3.0
    # the scale multiplies the whole objective
    assert make_fold(family, 1, scale=1.0).loss() * 3.0 == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize(("family", "optimizer", "lr", "kwargs", "bound"), TRAINS)
def test_fold_family_trains_with_the_optimizer_it_is_meant_for(
    family, optimizer, lr, kwargs, bound
):
    problem = make_fold(family, 2, **kwargs)
    opt = make_optimizer(optimizer, problem.params, lr)
    start = problem.loss()
    for _ in range(50):
        assert math.isfinite(problem.loss_and_grad())
        opt.step()
    assert problem.loss() < bound * start, (family, kwargs, problem.loss() / start)


@pytest.mark.parametrize("family", [f for f in FOLD_ONLY_FAMILIES if f != "matrix_completion"])
def test_one_epoch_of_fold_minibatches_averages_to_the_full_gradient(family):
    # n = 96 = 6 batches of 16; the same seed gives the same parameters and data whatever the
    # batch size (cnn_wd with GroupNorm here: BatchNorm's batch statistics do not decompose)
    problem = make_fold(family, 1, batch_size=16, scale=2.0, dtype=F64)
    full = make_fold(family, 1, batch_size=None, scale=2.0, dtype=F64)
    assert problem.n == full.n == 96
    total = torch.zeros(problem.dim, dtype=F64)
    for _ in range(6):
        problem.loss_and_grad()
        total += torch.cat([p.grad.reshape(-1) for p in problem.params])
    full.loss_and_grad()
    expected = torch.cat([p.grad.reshape(-1) for p in full.params])
    torch.testing.assert_close(total / 6, expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("family", FOLD_ONLY_FAMILIES)
def test_a_copy_of_a_fold_family_continues_bit_for_bit(family):
    problem = make_fold(family, 3, batch_size=8)
    sgd_losses(problem, 5, lr=0.01)
    twin = copy.deepcopy(problem)
    assert sgd_losses(problem, 14, lr=0.01) == sgd_losses(twin, 14, lr=0.01)
    assert torch.equal(flat_params(problem), flat_params(twin))


def test_matrix_completion_gradient_matches_autograd_and_fits_a_noiseless_matrix():
    problem = make_fold("matrix_completion", 0, dtype=F64, scale=2.5, extra_rank=1)
    rng = np.random.default_rng(0)
    U, V = (torch.as_tensor(rng.normal(0.0, 1.0, tuple(p.shape))) for p in problem.params)
    with torch.no_grad():
        problem.params[0].copy_(U)
        problem.params[1].copy_(V)
    value = problem.loss_and_grad()
    Ur, Vr = U.clone().requires_grad_(True), V.clone().requires_grad_(True)
    pred = (Ur[problem.rows] * Vr[problem.cols]).sum(1)
    ref = 2.5 * 0.5 * ((pred - problem.values) ** 2).mean()
    assert value == pytest.approx(ref.item(), rel=1e-12)
    for p, g in zip(problem.params, torch.autograd.grad(ref, [Ur, Vr]), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)
    info = problem.info()
    assert info["fit_rank"] == info["rank"] + 1 and problem.params[0].shape == (12, 3)
    # enough observations: at least three per degree of freedom of the true factors
    assert problem.n >= 3 * info["rank"] * (12 + 10 - info["rank"])


def test_sparse_logistic_rows_are_sparse_binary_bags_with_zipf_frequencies():
    problem = sample_sparse_logistic(np.random.default_rng(0), dim=512, n=400, density=0.02)
    X = problem.X
    assert set(torch.unique(X).tolist()) == {0.0, 1.0} and (X.sum(1) >= 1).all()
    assert 0.01 < problem.info()["density"] < 0.04
    frequency = X.mean(0).sort(descending=True).values
    assert frequency[:5].mean() > 20 * frequency[100:].mean()  # a few common features, many rare
    assert not torch.any(problem.params[0])  # starts at w = 0


def test_separable_data_have_the_gap_and_the_loss_goes_toward_zero():
    problem = sample_separable(np.random.default_rng(1), dim=8, n=200, gap=0.5)
    assert problem.info()["gap"] == 0.5 and problem.l2 <= 1e-6
    # some w separates every point: a long run of large steps keeps lowering the loss
    opt = make_optimizer("sgd", problem.params, 10.0)
    start = problem.loss()
    for _ in range(300):
        problem.loss_and_grad()
        opt.step()
    w = problem.params[0].detach()
    assert (problem.labels * (problem.X @ w) > 0).all()
    assert 0 < problem.loss() < 1e-2 * start


def test_label_noise_flips_the_stated_share_to_other_classes():
    problem = sample_label_noise(np.random.default_rng(0), hidden=8, n=1200, noise=0.3)
    _, y_true, _, _ = load_digits_split()
    flipped = (problem.y != y_true).float().mean().item()
    assert flipped == pytest.approx(problem.info()["noise"]) and 0.25 < flipped < 0.35


@pytest.mark.parametrize("task", ALGORITHMIC_TASKS)
def test_algorithmic_tasks_have_the_right_answers(task):
    x, y, classes = algorithmic_task(np.random.default_rng(0), task, 50, 6, symbols=3)
    tokens = x.argmax(-1)
    assert x.shape[:2] == y.shape and x.sum(-1).min() == 1  # one-hot
    if task == "copy":
        assert classes == 3 and x.shape == (50, 13, 5)
        assert (y[:, :7] == IGNORE).all() and np.array_equal(y[:, 7:], tokens[:, :6])
        assert (tokens[:, 6] == 4).all() and (tokens[:, 7:] == 3).all()  # delimiter, blanks
    elif task == "parity":
        assert classes == 2 and np.array_equal(y, np.cumsum(tokens, axis=1) % 2)
    else:
        a, b = tokens // 2, tokens % 2
        weights = 2 ** np.arange(6)
        total = (a * weights).sum(1) + (b * weights).sum(1)
        assert classes == 2 and np.array_equal((y * weights).sum(1), total % 2**6)
    with pytest.raises(ValueError, match="unknown task 'sort'"):
        algorithmic_task(np.random.default_rng(0), "sort", 4, 4)


def test_rnn_algorithmic_scores_only_the_recall_steps_of_a_copy():
    problem = make_fold("rnn_algorithmic", 0, task="copy", cell="rnn")
    assert isinstance(problem.model.rnn, torch.nn.RNN) and problem.info()["cell"] == "rnn"
    logits = problem.model(problem.X)
    scored = problem.y != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[scored], problem.y[scored])
    assert problem.loss() == pytest.approx(expected.item(), rel=1e-6)


def test_sequence_classes_labels_follow_the_rule():
    tokens, y, classes = sequence_classes(np.random.default_rng(0), "majority", 200, 12, 9, 3)
    counts = np.stack([(tokens == c).sum(1) for c in range(3)], axis=1)
    assert classes == 3 and np.array_equal(y, counts.argmax(1))
    assert set(np.unique(y)) == {0, 1, 2}
    tokens, y, classes = sequence_classes(np.random.default_rng(0), "order", 200, 12, 9)
    first_zero, first_one = (tokens == 0).argmax(1), (tokens == 1).argmax(1)
    assert ((tokens == 0).sum(1) == 1).all() and ((tokens == 1).sum(1) == 1).all()
    assert classes == 2 and np.array_equal(y, first_zero < first_one)


def test_transformer_classifier_reads_the_whole_sequence_in_either_direction():
    problem = make_fold("transformer_classifier", 0, task="order")
    model = problem.model
    assert not model.blocks[0].attn.causal and problem.y.shape == (96,)
    tokens = problem.X[:4].clone()
    base = model(tokens)
    assert base.shape == (4, 2)
    tokens[:, 0] = (tokens[:, 0] + 1) % 8  # the first token moves every output (no mask)
    assert not torch.allclose(model(tokens), base)


def test_stdlib_text_is_the_listed_files_and_windows_are_passages_of_it():
    import sysconfig
    from pathlib import Path

    text = stdlib_text()
    assert text is stdlib_text() and text.dtype == np.int64
    assert text.min() >= 0 and text.max() < CHAR_VOCAB
    first = (Path(sysconfig.get_paths()["stdlib"]) / STDLIB_TEXT_FILES[0]).read_text()[:200]
    decoded = "".join("\n" if i == 0 else chr(i - 1 + ord(" ")) for i in text[:200])
    assert decoded == first
    windows = text_windows(np.random.default_rng(0), 5, 30)
    for w in windows:
        starts = np.flatnonzero(text[: text.size - 29] == w[0])
        assert any(np.array_equal(text[s : s + 30], w) for s in starts)
    problem = make_fold("char_lm_text", 0)
    assert torch.equal(problem.y[:, :-1], problem.X[:, 1:])  # next characters
    assert problem.model.tok.num_embeddings == CHAR_VOCAB


def test_cnn_wd_norm_layers_hold_no_state_and_loss_is_pure():
    for norm, cls in (("batch", torch.nn.BatchNorm2d), ("group", torch.nn.GroupNorm)):
        problem = make_fold("cnn_wd", 0, norm=norm, conv_layers=2)
        norms = [m for m in problem.model if isinstance(m, cls)]
        convs = [m for m in problem.model if isinstance(m, torch.nn.Conv2d)]
        assert len(norms) == len(convs) == 2 and all(c.bias is None for c in convs)
        assert not list(problem.model.buffers())  # no running statistics
        assert problem.loss() == problem.loss()
        with pytest.raises(ValueError, match="unknown norm 'layer'"):
            make_fold("cnn_wd", 0, norm="layer")


def test_autoencoder_and_deep_linear_are_mean_squared_errors():
    auto = make_fold("autoencoder", 0, data="breast_cancer")
    assert auto.X is auto.y and auto.X.shape == (96, 30)
    expected = ((auto.model(auto.X) - auto.X) ** 2).mean()
    assert auto.loss() == pytest.approx(expected.item(), rel=1e-6)
    deep = make_fold("deep_linear", 0, depth=6)
    layers = list(deep.model)
    assert len(layers) == 6 and all(m.bias is None for m in layers)
    assert all(not isinstance(m, torch.nn.Linear) or m.bias is None for m in deep.model.modules())
    # a linear map: doubling the input doubles the output
    torch.testing.assert_close(deep.model(2 * deep.X), 2 * deep.model(deep.X))


@pytest.mark.parametrize("family", ["cnn_wd", "matrix_completion", "char_lm_text"])
def test_env_checkers_pass_on_fold_families(family):
    gym_check_env(LearningRateEnv(problem=family), skip_render_check=True)
