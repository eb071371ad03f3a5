"""Tests for the inner problem families and the named problem distributions."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from qlr.envs.distributions import (
    DISTRIBUTIONS,
    FOLD_ONLY_FAMILIES,
    HELD_OUT_FAMILIES,
    TRAIN_FAMILIES,
    ProblemDistribution,
    make_distribution,
)
from qlr.envs.problems import (
    FAMILIES,
    Problem,
    load_digits_split,
    sample_ackley,
    sample_digits_mlp,
    sample_least_squares,
    sample_logistic,
    sample_mlp,
    sample_quadratic,
    sample_quartic,
    sample_rastrigin,
    sample_rosenbrock,
)

F64 = torch.float64


# Reference objectives written with plain torch ops so autograd can differentiate them.
def ref_quadratic(p, x):
    r = x - p.x_star
    return p.scale * 0.5 * r @ p.A @ r


def ref_rosenbrock(p, x):
    return p.scale * (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def ref_rastrigin(p, x):
    return p.scale * (10 * x.numel() + (x**2 - 10 * torch.cos(2 * math.pi * x)).sum())


def ref_ackley(p, x):
    a = -20 * torch.exp(-0.2 * torch.sqrt((x**2).mean()))
    b = -torch.exp(torch.cos(2 * math.pi * x).mean())
    return p.scale * (a + b + 20 + math.e)


def ref_quartic(p, x):
    u = x - p.center
    return p.scale * (p.a * u**2 / 2 + p.b * u**4 / 4).sum()


def ref_least_squares(p, x):
    return p.scale * (((p.X @ x - p.y) ** 2).mean() / 2 - p.f_star)


def ref_logistic(p, x):
    margin = p.labels * (p.X @ x)
    return p.scale * (torch.log1p(torch.exp(-margin)).mean() + p.l2 / 2 * x @ x)


SCALE = (1e-2, 1e2)
ANALYTIC = {
    "quadratic": (dict(dim=12, cond=1e3), ref_quadratic),
    "rosenbrock": (dict(dim=7), ref_rosenbrock),
    "rastrigin": (dict(dim=6), ref_rastrigin),
    "ackley": (dict(dim=5), ref_ackley),
    "quartic": (dict(dim=8), ref_quartic),
    "least_squares": (dict(dim=6, n=40), ref_least_squares),
    "logistic": (dict(dim=6, n=50), ref_logistic),
}


def set_params(problem: Problem, values: torch.Tensor) -> None:
    with torch.no_grad():
        problem.params[0].copy_(values)


def flat_params(problem: Problem) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in problem.params])


def flat_grad(problem: Problem) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in problem.params])


# Small instances of every family, so that looping over all of them stays fast.
SMALL = {
    "quadratic": dict(dim=10),
    "rosenbrock": dict(dim=5),
    "rastrigin": dict(dim=5),
    "ackley": dict(dim=5),
    "quartic": dict(dim=5),
    "least_squares": dict(dim=5, n=64),
    "logistic": dict(dim=5, n=64),
    "mlp": dict(features=3, hidden=8, n=64),
    "digits_mlp": dict(hidden=16),
    "lm_transformer": dict(d_model=8, vocab=8, context=8, n=32),
    "gru_seq": dict(hidden=8, features=4, length=8, n=32),
    "digits_cnn": dict(channels=2, n=64),
    "cancer_mlp": dict(hidden=8, blocks=1),
    "wine_softmax": dict(),
    "lstm_lm": dict(hidden=8, embed=4, vocab=8, context=8, n=32),
    "cnn_wd": dict(channels=2, n=64),
    "autoencoder": dict(hidden=8, bottleneck=3, n=64),
    "matrix_completion": dict(rows=10, cols=8, rank=2),
    "deep_linear": dict(dim=4, hidden=6, depth=4, n=64),
    "rnn_algorithmic": dict(hidden=8, length=4, n=32),
    "transformer_classifier": dict(d_model=8, vocab=8, context=8, n=32),
    "char_lm_text": dict(d_model=8, context=8, n=32),
    "char_rnn_text": dict(hidden=8, embed=4, context=8, n=32),
    "sparse_logistic": dict(dim=64, n=64),
    "separable": dict(dim=5, n=64),
    "label_noise": dict(hidden=8, n=64),
}
DATA_FAMILIES = {
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
    "cnn_wd",
    "autoencoder",
    "matrix_completion",
    "deep_linear",
    "rnn_algorithmic",
    "transformer_classifier",
    "char_lm_text",
    "char_rnn_text",
    "sparse_logistic",
    "separable",
    "label_noise",
}
# The argument that grows from train through val to test, per family.
SIZE_KEYS = ("dim", "hidden", "d_model", "channels")


def size_key(kwargs: dict) -> str:
    return next(key for key in SIZE_KEYS if key in kwargs)


def test_small_covers_every_family():
    assert set(SMALL) == set(FAMILIES)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("family", sorted(ANALYTIC))
def test_analytic_gradient_matches_autograd(family):
    kwargs, ref = ANALYTIC[family]
    rng = np.random.default_rng(3)
    for _ in range(3):
        problem = FAMILIES[family](rng, scale=SCALE, dtype=F64, **kwargs)
        x = torch.as_tensor(rng.normal(0.0, 2.0, problem.dim), dtype=F64)
        set_params(problem, x)
        value = problem.loss_and_grad()

        xr = x.clone().requires_grad_(True)
        expected = ref(problem, xr)
        (expected_grad,) = torch.autograd.grad(expected, xr)
        torch.testing.assert_close(problem.params[0].grad, expected_grad, rtol=1e-4, atol=1e-10)
        assert value == pytest.approx(expected.item(), rel=1e-6)
        assert problem.loss() == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_float32_by_default_and_grad_overwritten_not_accumulated(family):
    problem = FAMILIES[family](np.random.default_rng(0), **SMALL[family])
    assert all(p.dtype == torch.float32 and p.requires_grad and p.is_leaf for p in problem.params)
    problem.loss_and_grad()
    first = flat_grad(problem).clone()
    problem.loss_and_grad()
    assert first.dtype == torch.float32
    assert torch.isfinite(first).all() and first.abs().sum() > 0
    torch.testing.assert_close(flat_grad(problem), first)


def test_ackley_and_rastrigin_gradients_are_zero_at_the_origin():
    for sample in (sample_ackley, sample_rastrigin):
        problem = sample(np.random.default_rng(0), dim=4)
        set_params(problem, torch.zeros(4))
        assert problem.loss_and_grad() == 0.0
        assert torch.equal(problem.params[0].grad, torch.zeros(4))


@pytest.mark.parametrize("family", sorted(ANALYTIC))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_analytic_families_survive_nonfinite_params(family, bad):
    problem = FAMILIES[family](np.random.default_rng(0), **SMALL[family])
    set_params(problem, torch.full((problem.dim,), bad))
    value = problem.loss_and_grad()  # must not raise
    assert not math.isfinite(value) or value >= 0
    assert not math.isfinite(problem.loss()) or problem.loss() >= 0


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_instance_different_seed_different(family):
    def make(seed):
        return FAMILIES[family](np.random.default_rng(seed), **SMALL[family])

    a, b, c = make(5), make(5), make(6)
    assert torch.equal(flat_params(a), flat_params(b))
    assert a.info() == b.info()
    assert a.loss() == b.loss()
    # least_squares and sparse_logistic start every instance at w = 0, so their data must
    # differ instead (at w = 0 every sparse_logistic instance has the loss log 2)
    if a.dim == c.dim and torch.equal(flat_params(a), flat_params(c)):
        assert not torch.equal(a.X, c.X) if family == "sparse_logistic" else a.loss() != c.loss()


def test_same_seed_same_minibatch_sequence():
    def losses(seed):
        p = sample_logistic(np.random.default_rng(seed), dim=5, n=64, batch_size=8)
        return [p.loss_and_grad() for _ in range(12)]

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)


def test_sampling_leaves_torch_global_rng_alone():
    state = torch.get_rng_state()
    for family in FAMILIES:
        FAMILIES[family](np.random.default_rng(0), **SMALL[family]).loss_and_grad()
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------- objective values


def test_losses_are_zero_at_known_optima():
    rng = np.random.default_rng(4)
    quad = sample_quadratic(rng, dim=20, cond=1e3, scale=50.0)
    set_params(quad, quad.x_star)
    rosen = sample_rosenbrock(rng, dim=6, scale=50.0)
    set_params(rosen, torch.ones(6))
    rastrigin = sample_rastrigin(rng, dim=6, scale=50.0)
    set_params(rastrigin, torch.zeros(6))
    ackley = sample_ackley(rng, dim=6, scale=50.0)
    set_params(ackley, torch.zeros(6))
    quartic = sample_quartic(rng, dim=6, scale=50.0)
    set_params(quartic, quartic.center)
    lsq = sample_least_squares(rng, dim=8, n=50, noise=0.5, scale=50.0)
    set_params(lsq, lsq.w_star)
    for problem in (quad, rosen, rastrigin, ackley, quartic, lsq):
        assert problem.loss() == pytest.approx(0.0, abs=1e-9), problem.name
        assert problem.loss_and_grad() == pytest.approx(0.0, abs=1e-9), problem.name
        # and it is a minimum: a small move makes the loss positive
        set_params(problem, problem.params[0].detach() + 1e-2)
        assert problem.loss() > 0, problem.name


def test_least_squares_shift_is_the_lstsq_optimum_value():
    problem = sample_least_squares(np.random.default_rng(2), dim=8, n=50, noise=0.5, dtype=F64)
    assert problem.f_star > 1e-3  # noisy data: the unshifted minimum is well above zero
    assert ref_least_squares(problem, problem.w_star).item() == pytest.approx(0.0, abs=1e-12)
    # the shifted objective is the usual one: compare at a random point
    w = torch.randn(8, dtype=F64, generator=torch.Generator().manual_seed(0))
    set_params(problem, w)
    assert problem.loss() == pytest.approx(ref_least_squares(problem, w).item(), rel=1e-9)


def test_quadratic_has_the_requested_condition_number():
    problem = sample_quadratic(np.random.default_rng(0), dim=30, cond=(10.0, 1e4), dtype=F64)
    eig = torch.linalg.eigvalsh(problem.A)
    assert eig.max().item() == pytest.approx(1.0, rel=1e-8)
    assert (eig.max() / eig.min()).item() == pytest.approx(problem.info()["cond"], rel=1e-6)
    assert 10.0 <= problem.info()["cond"] <= 1e4


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_losses_are_nonnegative_at_random_points(family):
    rng = np.random.default_rng(8)
    for _ in range(2):
        kwargs = {**SMALL[family], "scale": (1e-3, 1e3)}
        if family in DATA_FAMILIES:
            kwargs["batch_size"] = [None, 8]
        problem = FAMILIES[family](rng, **kwargs)
        start = [p.detach().clone() for p in problem.params]
        for spread in (0.1, 1.0, 10.0):
            with torch.no_grad():
                for p, p0 in zip(problem.params, start, strict=True):
                    noise = torch.as_tensor(rng.normal(0.0, spread, tuple(p.shape)), dtype=p.dtype)
                    p.copy_(p0 + noise)
            assert problem.loss() >= 0
            assert problem.loss_and_grad() >= 0


def test_float32_losses_never_negative_near_optimum():
    rng = np.random.default_rng(0)
    quad = sample_quadratic(rng, dim=100, cond=1e8, scale=1e3)  # r^T A r would go negative
    lsq = sample_least_squares(rng, dim=20, n=200, scale=1e3)
    gen = torch.Generator().manual_seed(0)
    # flattest directions of each problem: where rounding is most likely to win
    quad_dirs = torch.linalg.eigh(quad.A.double()).eigenvectors[:, :20].T.float()
    lsq_dirs = torch.linalg.svd(lsq.X.double(), full_matrices=False).Vh[-5:].float()
    for problem, optimum, dirs in ((quad, quad.x_star, quad_dirs), (lsq, lsq.w_star, lsq_dirs)):
        for eps in (0.0, 1e-3, 1.0):
            for direction in [*dirs, *torch.randn(10, problem.dim, generator=gen)]:
                set_params(problem, optimum + eps * direction)
                assert problem.loss() >= 0 and problem.loss_and_grad() >= 0, problem.name


# --------------------------------------------------------------------------- counters, batches


def test_counters_for_analytic_problem():
    problem = sample_rosenbrock(np.random.default_rng(0), dim=4)
    assert (problem.grad_evals, problem.func_evals, problem.examples_seen) == (0, 0, 0)
    for _ in range(3):
        problem.loss_and_grad()
    problem.loss()
    problem.loss()
    assert (problem.grad_evals, problem.func_evals, problem.examples_seen) == (3, 2, 0)


@pytest.mark.parametrize(
    "sample, kwargs, n",
    [
        (sample_least_squares, dict(dim=5, n=100), 100),
        (sample_logistic, dict(dim=5, n=100), 100),
        (sample_mlp, dict(features=3, hidden=8, n=100), 100),
        (sample_digits_mlp, dict(hidden=8), 1200),
    ],
)
@pytest.mark.parametrize("batch_size", [None, 16])
def test_counters_for_data_problems(sample, kwargs, n, batch_size):
    problem = sample(np.random.default_rng(0), batch_size=batch_size, **kwargs)
    assert problem.stochastic == (batch_size is not None)
    assert problem.info()["batch_size"] == batch_size and problem.info()["n"] == n
    for _ in range(3):
        problem.loss_and_grad()
    problem.loss()
    problem.loss()
    per_grad = n if batch_size is None else batch_size
    assert (problem.grad_evals, problem.func_evals) == (3, 2)
    assert problem.examples_seen == 3 * per_grad + 2 * n


def test_batch_size_at_least_n_means_full_batch():
    problem = sample_least_squares(np.random.default_rng(0), dim=5, n=40, batch_size=64)
    assert not problem.stochastic and problem.info()["batch_size"] is None


@pytest.mark.parametrize("sample", [sample_least_squares, sample_logistic, sample_mlp])
def test_minibatch_losses_vary_and_full_loss_is_deterministic(sample):
    problem = sample(np.random.default_rng(0), n=128, batch_size=16)
    assert problem.stochastic
    batch_losses = [problem.loss_and_grad() for _ in range(4)]
    assert len(set(batch_losses)) == 4
    assert problem.loss() == problem.loss()


def full_data_gradient(problem: Problem) -> torch.Tensor:
    """Autograd gradient of the full-data (unshifted) objective, as a flat vector."""
    params = [p.detach().clone().requires_grad_(True) for p in problem.params]
    if problem.name == "least_squares":
        value = ref_least_squares(problem, params[0])
    elif problem.name == "logistic":
        value = ref_logistic(problem, params[0])
    else:
        out = torch.func.functional_call(
            problem.model,
            dict(zip(dict(problem.model.named_parameters()), params, strict=True)),
            (problem.X,),
        )
        value = torch.nn.functional.cross_entropy(out, problem.y) * problem.scale
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])


@pytest.mark.parametrize("sample", [sample_least_squares, sample_logistic, sample_mlp])
def test_one_epoch_of_minibatch_gradients_averages_to_the_full_gradient(sample):
    # n = 96 = 6 batches of 16: an epoch visits every example exactly once.
    problem = sample(np.random.default_rng(1), n=96, batch_size=16, scale=3.0, dtype=F64)
    total = torch.zeros(problem.dim, dtype=F64)
    for _ in range(6):
        problem.loss_and_grad()
        total += flat_grad(problem)
    torch.testing.assert_close(total / 6, full_data_gradient(problem), rtol=1e-6, atol=1e-10)


def test_mlp_gradient_works_inside_no_grad():
    problem = sample_mlp(np.random.default_rng(0), **SMALL["mlp"])
    with torch.no_grad():
        problem.loss_and_grad()
    assert flat_grad(problem).abs().sum() > 0


# --------------------------------------------------------------------------- digits


def test_digits_split_is_standardised_and_cached():
    X_train, y_train, X_test, y_test = load_digits_split()
    assert X_train.shape == (1200, 64) and X_test.shape == (597, 64)
    assert y_train.shape == (1200,) and y_test.shape == (597,)
    assert X_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert set(y_train.tolist()) == set(range(10))
    torch.testing.assert_close(X_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    varying = X_train.std(0, unbiased=False) > 0
    torch.testing.assert_close(
        X_train.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0
    )
    assert load_digits_split()[0] is X_train


def test_digits_mlp_instance():
    problem = sample_digits_mlp(np.random.default_rng(0), hidden=32, scale=2.0)
    assert problem.name == "digits_mlp"
    assert problem.dim == 64 * 32 + 32 + 32 * 10 + 10
    assert problem.info()["hidden"] == 32
    # an untrained 10-class classifier sits near log(10) per example
    assert 1.0 < problem.loss() / 2.0 < 5.0


# --------------------------------------------------------------------------- distributions


@pytest.mark.parametrize(
    "spec, bad",
    [
        ("nope", "nope"),
        (["quadratic", "bogus"], "bogus"),
        ({"quadratic": 1.0, "bogus": 2.0}, "bogus"),
        ({"quadratic": -1.0}, "-1.0"),
        (42, "42"),
    ],
)
def test_make_distribution_errors_name_the_bad_value(spec, bad):
    with pytest.raises(ValueError, match="bogus|nope|-1.0|42") as err:
        make_distribution(spec)
    assert bad in str(err.value)


def test_make_distribution_lists_valid_choices_on_error():
    with pytest.raises(ValueError, match="unknown distribution or family 'nope'") as err:
        make_distribution("nope")
    assert "train" in str(err.value) and "quadratic" in str(err.value)


def test_make_distribution_accepts_names_lists_and_dicts():
    rng = np.random.default_rng(0)
    assert make_distribution("train") is DISTRIBUTIONS["train"]
    assert make_distribution("rastrigin").sample(rng).name == "rastrigin"
    assert set(make_distribution(["ackley", "quartic"]).families) == {"ackley", "quartic"}
    mix = make_distribution({"ackley": 3.0, "quartic": 1.0})
    assert mix.families["ackley"][0] == 3.0
    assert make_distribution(mix) is mix


def families_seen(dist: ProblemDistribution, seed: int = 0, limit: int = 1000) -> set[str]:
    rng, seen = np.random.default_rng(seed), set()
    for _ in range(limit):
        seen.add(dist.sample(rng).name)
        if seen == set(dist.families):
            break
    return seen


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_named_distribution_samples_all_its_families(name):
    dist = DISTRIBUTIONS[name]
    assert families_seen(dist) == set(dist.families)


def test_held_out_families_only_in_test():
    assert set(DISTRIBUTIONS["train"].families) == set(TRAIN_FAMILIES)
    assert not set(HELD_OUT_FAMILIES) & set(TRAIN_FAMILIES)
    assert not set(FOLD_ONLY_FAMILIES) & (set(TRAIN_FAMILIES) | set(HELD_OUT_FAMILIES))
    assert set(TRAIN_FAMILIES) | set(HELD_OUT_FAMILIES) | set(FOLD_ONLY_FAMILIES) == set(FAMILIES)
    # the families of the folds protocol enter no named split
    for name in ("train", "val", "test", "train_stochastic", "val_stochastic", "test_stochastic"):
        assert not set(FOLD_ONLY_FAMILIES) & set(DISTRIBUTIONS[name].families), name
    for name in ("train", "train_stochastic", "val"):
        assert not set(HELD_OUT_FAMILIES) & set(DISTRIBUTIONS[name].families)
    assert set(HELD_OUT_FAMILIES) <= set(DISTRIBUTIONS["test"].families)
    assert "digits_mlp" in DISTRIBUTIONS["test_stochastic"].families


def test_test_dimensions_exceed_train_dimensions():
    train, test = DISTRIBUTIONS["train"].families, DISTRIBUTIONS["test"].families
    for family, (_, kwargs) in train.items():
        key = size_key(kwargs)
        assert test[family][1][key][0] > kwargs[key][1], family


def test_validation_split_sits_between_train_and_test():
    """Model selection uses `val`: its instances are larger than train's and smaller than test's."""
    train, val, test = (DISTRIBUTIONS[n].families for n in ("train", "val", "test"))
    assert set(val) == set(train)
    for family, (_, kwargs) in val.items():
        key = size_key(kwargs)
        assert train[family][1][key][1] <= kwargs[key][0], family
        assert kwargs[key][1] <= test[family][1][key][0], family


def test_stochastic_distributions_only_give_minibatch_problems():
    for name in ("train_stochastic", "test_stochastic"):
        rng = np.random.default_rng(0)
        assert all(DISTRIBUTIONS[name].sample(rng).stochastic for _ in range(8))


def test_train_mixes_scales_and_batch_modes():
    rng = np.random.default_rng(0)
    problems = [DISTRIBUTIONS["train"].sample(rng) for _ in range(60)]
    scales = [p.scale for p in problems]
    assert 1e-3 <= min(scales) < 1e-1 and 1e1 < max(scales) <= 1e3
    data = [p for p in problems if p.name in ("least_squares", "logistic", "mlp")]
    assert {p.stochastic for p in data} == {True, False}


@pytest.mark.parametrize("name", ["train", "test_stochastic", "ackley"])
def test_distributions_pickle_and_sample_deterministically(name):
    dist = pickle.loads(pickle.dumps(DISTRIBUTIONS[name]))
    a = dist.sample(np.random.default_rng(11))
    b = DISTRIBUTIONS[name].sample(np.random.default_rng(11))
    assert a.info() == b.info() and torch.equal(flat_params(a), flat_params(b))


def test_set_batch_size_changes_the_next_minibatches_only_on_minibatch_problems():
    rng = np.random.default_rng(0)
    problem = sample_logistic(rng, batch_size=16)
    problem.loss_and_grad()
    problem.set_batch_size(48)
    before = problem.examples_seen
    problem.loss_and_grad()
    assert problem.batch_size == 48 and problem.examples_seen - before == 48
    full = sample_logistic(np.random.default_rng(0), batch_size=None)
    with pytest.raises(ValueError, match="full-batch"):
        full.set_batch_size(8)
