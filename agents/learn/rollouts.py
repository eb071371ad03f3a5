"""Policy improvement from paired rollouts (``qlr improve``): the slope rule, overruled only
where copies of the same run say another factor does better.

At states sampled along episodes of the slope rule in the training environment, the whole
`LearningRateEnv` is copied once per action (``copy.deepcopy`` copies its run, its minibatch
generator and its rollback snapshot). Each copy takes its action and then follows the rule for
``horizon - 1`` more decisions on the same minibatches, so the copies differ only by that one
action (common random numbers) and the differences of their returns (the sums of the env's
rewards: the log of the loss's decrease, minus a penalty per block rolled back) are nearly free
of minibatch noise. A Q-network is fitted to each action's advantage over the rule's action at
that state, and the policy file keeps the rule's action unless the fitted advantage clears a
margin (`qlr.deferral.Deferral`): one round of approximate policy iteration with the rule as the
policy it improves on. With ``follow``, the episodes and the copies follow an earlier round's
policy file instead (a second round).

    qlr improve runs/improve_seed0 --config default --seed 0 --margin 0.1

The labels cost about ``label_fraction x actions x horizon`` inner decisions per decision of the
episodes (0.08 x 5 x 12, about 5 per decision, besides the episode's own), in ``jobs`` worker
processes; the fit takes seconds. The labels are kept in the output folder (``labels.npz``) and
reused by a later call with the same settings, so margins can be tried without relabelling.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qlr.agents.bench.workers import run_parallel
from qlr.agents.errors import UsageError
from qlr.agents.learn.run_files import load_arrays, save_arrays, write_json
from qlr.deferral import SLOPE_FEATURE, Deferral
from qlr.policy import Policy, load_policy, save_policy

LABELS_FILE = "labels.npz"
SETTINGS_FILE = "labels.json"
POLICY_FILE = "policy.qlr"
LABEL_SEED_OFFSET = 7_000_000
"""Episode seeds of the labels: ``LABEL_SEED_OFFSET + 10_000 x seed + i``, apart from the seeds
of `qlr train`'s environments and of its demonstrations."""

Actor = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class RolloutSettings:
    """Which states are labelled and how far each copy looks.

    Attributes:
        episodes: episodes of the rule (or of `follow`) in the training environment.
        horizon: decisions each copy runs: its own action, then ``horizon - 1`` of the rule's.
        label_fraction: the chance that a decision of an episode is labelled.
        seed: seeds the episodes (see `LABEL_SEED_OFFSET`) and the fit.
        follow: a policy file the episodes and the copies follow instead of the rule.
    """

    episodes: int = 80
    horizon: int = 12
    label_fraction: float = 0.08
    seed: int = 0
    follow: str | None = None

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1 decision, got {self.horizon}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must lie in (0, 1], got {self.label_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = ("observations", "returns", "rule_actions")


@dataclass
class RolloutLabels:
    """Labelled states: every action's return on copies of the same run."""

    observations: np.ndarray  # [n, obs_dim] float32
    returns: np.ndarray  # [n, n_actions] float32: the action, then `horizon - 1` of the base's
    rule_actions: np.ndarray  # [n] int64: the slope rule's action at the state

    def __len__(self) -> int:
        return len(self.rule_actions)

    def advantages(self) -> np.ndarray:
        """Each action's return minus the rule's action's return: 0 in the rule's column."""
        own = self.returns[np.arange(len(self)), self.rule_actions]
        return self.returns - own[:, None]

    def save(self, path: Path) -> Path:
        return save_arrays(path, {name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def load(cls, path: Path) -> RolloutLabels:
        return cls(**load_arrays(path, _FIELDS))

    @classmethod
    def concatenate(cls, parts: list[RolloutLabels]) -> RolloutLabels:
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS})


# ------------------------------------------------------------------------------ labelling
def rule_actor(feature_names: tuple[str, ...], action_factors: tuple[float, ...]) -> Actor:
    """The slope rule on an observation, exactly as a deferring policy reads it."""
    if SLOPE_FEATURE not in feature_names:
        raise ValueError(f"the slope rule reads {SLOPE_FEATURE!r}, which the env does not observe")
    rule = Deferral(0.0)
    at, indices = feature_names.index(SLOPE_FEATURE), rule.rule_indices(action_factors)
    return lambda obs: rule.rule_action(float(obs[at]), indices)


def paired_returns(env: Any, horizon: int, follow: Actor) -> np.ndarray:
    """Every action's return from the env's current state, each on its own copy of the run.

    A copy takes its action, then `follow` for ``horizon - 1`` decisions or until the episode
    ends; the live env is not touched.
    """
    returns = np.zeros(env.action_space.n, dtype=np.float32)
    for action in range(env.action_space.n):
        trial = copy.deepcopy(env)
        obs, reward, terminated, truncated, _ = trial.step(action)
        total = reward
        for _ in range(horizon - 1):
            if terminated or truncated:
                break
            obs, reward, terminated, truncated, _ = trial.step(follow(obs))
            total += reward
        returns[action] = total
    return returns


def label_episodes(
    env_kwargs: Mapping[str, Any], settings: RolloutSettings, seeds: list[int]
) -> RolloutLabels:
    """Labels from one episode per seed in a fresh env built from `env_kwargs`."""
    from qlr.envs.env import LearningRateEnv

    torch.set_num_threads(1)
    env = LearningRateEnv(**dict(env_kwargs))
    rule = rule_actor(tuple(env.feature_names), env.controller.action_factors)
    follow = rule if settings.follow is None else _policy_actor(settings.follow, env)
    rows: dict[str, list] = {name: [] for name in _FIELDS}
    for seed in seeds:
        choose = np.random.default_rng(seed)  # which decisions are labelled
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            if choose.random() < settings.label_fraction:
                rows["observations"].append(obs)
                rows["returns"].append(paired_returns(env, settings.horizon, follow))
                rows["rule_actions"].append(rule(obs))
            obs, _, terminated, truncated, _ = env.step(follow(obs))
            done = terminated or truncated
    n_actions = env.action_space.n
    return RolloutLabels(
        observations=np.asarray(rows["observations"], dtype=np.float32).reshape(-1, len(obs)),
        returns=np.asarray(rows["returns"], dtype=np.float32).reshape(-1, n_actions),
        rule_actions=np.asarray(rows["rule_actions"], dtype=np.int64),
    )


def _policy_actor(path: str, env: Any) -> Actor:
    policy = load_policy(path)
    if tuple(policy.metadata.feature_names) != tuple(env.feature_names):
        raise ValueError(f"{path} reads other features than the environment observes")
    if tuple(policy.action_factors) != tuple(env.controller.action_factors):
        raise ValueError(f"{path} has other action factors than the environment")
    return policy.act


def _label_chunk(args: tuple) -> RolloutLabels:
    return label_episodes(*args)


def collect_labels(
    env_kwargs: Mapping[str, Any], settings: RolloutSettings, jobs: int = 1
) -> RolloutLabels:
    """The labels of `settings.episodes` episodes, in `jobs` worker processes.

    Episode i is seeded ``LABEL_SEED_OFFSET + 10_000 * seed + i`` whatever the number of
    workers, so the labels do not depend on `jobs`.
    """
    first = LABEL_SEED_OFFSET + 10_000 * settings.seed
    seeds = [first + i for i in range(settings.episodes)]
    chunks = max(1, min(settings.episodes, 4 * jobs))
    tasks = [(dict(env_kwargs), settings, seeds[i::chunks]) for i in range(chunks)]
    return RolloutLabels.concatenate(run_parallel(_label_chunk, tasks, jobs))


# ------------------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class FitSettings:
    """The regression of the advantages: an MLP, Huber loss, Adam, early stopping on a split."""

    hidden: tuple[int, ...] = (64, 64)
    steps: int = 4000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    validation: float = 0.1  # the share of states held out to pick the best step


def fit_advantages(
    labels: RolloutLabels, fit: FitSettings = FitSettings(), seed: int = 0
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """An MLP from observation to every action's advantage over the rule's action.

    The inputs are standardized inside the network (folded into its first layer), so the
    layers read the raw observation, as a policy file's do. Returns the layers and a report
    (states, the held-out Huber loss at the best step and at step 0).
    """
    if len(labels) < 10:
        raise ValueError(f"need at least 10 labelled states to fit, got {len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(labels.observations, dtype=torch.float32)
    y = torch.as_tensor(labels.advantages(), dtype=torch.float32)
    order = torch.randperm(len(x), generator=generator)
    held = max(1, int(fit.validation * len(x)))
    val, train = order[:held], order[held:]
    mean = x[train].mean(0)
    std = x[train].std(0).clamp_min(1e-3)
    sizes = [x.shape[1], *fit.hidden, y.shape[1]]
    torch.manual_seed(seed)
    net = nn.Sequential()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        net.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            net.append(nn.ReLU())
    optimizer = torch.optim.AdamW(
        net.parameters(), fit.learning_rate, weight_decay=fit.weight_decay
    )
    loss_fn = nn.HuberLoss()

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(net((x[val] - mean) / std), y[val]))

    start = best = held_out_loss()
    best_state = copy.deepcopy(net.state_dict())
    for step in range(fit.steps):
        batch = train[torch.randint(len(train), (fit.batch_size,), generator=generator)]
        loss = loss_fn(net((x[batch] - mean) / std), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 49:
            now = held_out_loss()
            if now < best:
                best, best_state = now, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    layers = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in linears]
    w, b = layers[0]
    layers[0] = (w / std, b - (w / std) @ mean)  # the standardization, folded in
    report = {"states": len(labels), "held_out_loss": best, "held_out_loss_at_start": start}
    return layers, report


def improved_policy(
    labels: RolloutLabels,
    train_config: Mapping[str, Any],
    settings: RolloutSettings,
    margin: float,
    fit: FitSettings = FitSettings(),
) -> Policy:
    """The policy file of the fitted advantages, deferring to the rule below `margin`.

    It runs without the spike guard (as the third design's other arms do: the rollback guard
    undoes real divergences). Its training config is `train_config` with the labelling settings
    and without the periodic evaluation, which it never ran.
    """
    from qlr.agents.learn.export import policy_metadata

    layers, report = fit_advantages(labels, fit, seed=settings.seed)
    config = {
        **dict(train_config),
        "seed": settings.seed,
        "eval_freq": 0,
        "final_eval": None,
        "rollouts": settings.to_dict(),
    }
    extra = {"learner": "paired_rollouts", "fit": {**asdict(fit), **report}}
    metadata = policy_metadata(layers, "relu", config, extra)
    return Policy(layers, replace(metadata, spike_factor=None, defer=Deferral(margin)))


def labels_for(
    out: Path, env_kwargs: Mapping[str, Any], settings: RolloutSettings, jobs: int
) -> RolloutLabels:
    """The labels in `out` when they were made with `settings` and `env_kwargs`, else new ones."""
    made_with = {"settings": settings.to_dict(), "env": _jsonable(env_kwargs)}
    settings_path, labels_path = out / SETTINGS_FILE, out / LABELS_FILE
    if labels_path.is_file() and settings_path.is_file():
        if json.loads(settings_path.read_text()) == made_with:
            return RolloutLabels.load(labels_path)
    labels = collect_labels(env_kwargs, settings, jobs)
    labels.save(labels_path)
    write_json(settings_path, made_with)
    return labels


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ------------------------------------------------------------------------------ CLI
def configure(parser: argparse.ArgumentParser) -> None:
    defaults = RolloutSettings()
    parser.add_argument("out", type=Path, help="folder for labels.npz and policy.qlr")
    parser.add_argument(
        "--config", default="default", help="the training config whose env is labelled"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--episodes", type=int, default=defaults.episodes)
    parser.add_argument(
        "--horizon",
        type=int,
        default=defaults.horizon,
        help="decisions each copy runs (its action, then the rule's)",
    )
    parser.add_argument("--label-fraction", type=float, default=defaults.label_fraction)
    parser.add_argument(
        "--follow",
        default=None,
        metavar="POLICY",
        help="episodes and copies follow this policy file instead of the rule (a second round)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.1,
        help="the fitted advantage over the rule's action an action needs (default 0.1)",
    )
    parser.add_argument("--jobs", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    from qlr.agents.learn.config import load_config

    try:
        config = load_config(args.config)
        settings = RolloutSettings(
            episodes=args.episodes,
            horizon=args.horizon,
            label_fraction=args.label_fraction,
            seed=args.seed,
            follow=args.follow,
        )
        Deferral(args.margin)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    labels = labels_for(args.out, config.env, settings, args.jobs)
    policy = improved_policy(labels, config.to_dict(), settings, args.margin)
    path = save_policy(policy, args.out / POLICY_FILE)
    share = float(np.mean(labels.advantages().max(axis=1) > args.margin))
    print(
        f"wrote {path}: {len(labels)} labelled states, the best action beats the rule's by more "
        f"than {args.margin:g} at {share:.0%} of them; held-out fit loss "
        f"{policy.metadata.extra['fit']['held_out_loss']:.4f}"
    )
    return 0
