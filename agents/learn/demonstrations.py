"""Demonstrations for `qlr.agents.learn.dqfd.DQfD`: episodes of a demonstrator in the env.

A demonstrator acts in the same `LearningRateEnv` the agent learns in and its transitions are
recorded exactly as the agent's are (observation, action, reward, next observation, terminated,
truncated). Two demonstrators:

* ``rule``: `qlr.rules.slope_rule` read off the observation's ``update_slope`` feature, its
  factors mapped to the nearest of the env's. Free: it costs what the episode costs.
* ``teacher``: the lookahead teacher of `qlr.agents.bench.teacher`, which at every decision tries
  every factor on copies of the run and keeps the one whose copy ends lowest. Costly: about
  (number of factors) x (remaining steps) extra inner steps per decision.

Episodes are collected in worker processes (one torch thread each) and stored as one ``.npz``
file in the run directory, so a resumed run reuses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qlr.agents.bench.workers import run_parallel
from qlr.agents.learn.run_files import load_arrays, save_arrays
from qlr.rules import SLOPE_FEATURE, slope_rule

# The environment, the teacher (which steps copies of the env's run) and stable-baselines3's
# buffers are imported where they are used: `qlr --help` loads this module (through
# `qlr.agents.learn.train`), and gymnasium and SB3 take about a second to import.

DEMONSTRATORS = ("rule", "teacher")
_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminated", "truncated")


@dataclass
class Demonstrations:
    """Transitions of whole episodes, in order (so that n-step returns can be formed)."""

    observations: np.ndarray  # [n, obs_dim] float32
    actions: np.ndarray  # [n] int64
    rewards: np.ndarray  # [n] float32
    next_observations: np.ndarray  # [n, obs_dim] float32
    terminated: np.ndarray  # [n] bool: the episode ended in a divergence
    truncated: np.ndarray  # [n] bool: the episode ran out of decisions

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episodes(self) -> int:
        return int(np.sum(self.terminated | self.truncated))

    def save(self, path: Path) -> Path:
        """Write the transitions atomically as one ``.npz`` file."""
        return save_arrays(path, {name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def load(cls, path: Path) -> Demonstrations:
        return cls(**load_arrays(path, _FIELDS))

    @classmethod
    def concatenate(cls, parts: list[Demonstrations]) -> Demonstrations:
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS})


# ------------------------------------------------------------------------------ demonstrators
Demonstrator = Callable[[Any, np.ndarray], int]
"""``demonstrator(env, obs) -> action``: acts in an unwrapped `LearningRateEnv`."""


def nearest_action(env: Any, rate_factor: float, batch_factor: float = 1.0) -> int:
    """The env action whose rate factor is nearest `rate_factor` in log space, with the batch
    factor nearest `batch_factor` (the batch held by default)."""
    controller = env.controller
    distances = [abs(math.log(f / rate_factor)) for f in controller.action_factors]
    rate_index = int(np.argmin(distances))
    batch_factors = controller.batch_factors or (1.0,)
    batch_index = int(np.argmin([abs(math.log(f / batch_factor)) for f in batch_factors]))
    return rate_index * len(batch_factors) + batch_index


def rule_demonstrator(grow_batch_above: float | None = None, **rule_kwargs: Any) -> Demonstrator:
    """`qlr.rules.slope_rule` (with `rule_kwargs`) acting on the env's own observation.

    With `grow_batch_above`, in an env that also sets the batch (the noise-level mode), the
    demonstrator doubles the batch when it holds the rate and ``grad_noise`` reads above that
    level (successive minibatch gradients mostly noise): the slope is flat within the noise,
    so a smaller noise level comes from a larger batch rather than a lower rate.
    """
    rule = slope_rule(**rule_kwargs)  # the env's own decision interval applies

    def act(env: Any, obs: np.ndarray) -> int:
        names = list(env.feature_names)
        if SLOPE_FEATURE not in names:
            raise ValueError(
                f"the rule demonstrator reads {SLOPE_FEATURE!r}, which the env does not observe "
                f"(features: {names}); add it to env.features"
            )
        slope = obs[names.index(SLOPE_FEATURE)]
        factor = rule.action_factors[rule.act(np.array([slope], dtype=np.float32))]
        batch = 1.0
        if grow_batch_above is not None and factor == 1.0 and "grad_noise" in names:
            batch = 2.0 if obs[names.index("grad_noise")] > grow_batch_above else 1.0
        return nearest_action(env, factor, batch)

    return act


def teacher_demonstrator(horizon: int | None = None) -> Demonstrator:
    """The lookahead teacher: try every factor on copies of the run, keep the best."""
    from qlr.agents.bench.teacher import env_lookahead_action

    def act(env: Any, obs: np.ndarray) -> int:
        return env_lookahead_action(env, horizon=horizon)

    return act


def make_demonstrator(name: str, options: Mapping[str, Any] | None = None) -> Demonstrator:
    """A demonstrator by name (``rule`` or ``teacher``) with its options."""
    options = dict(options or {})
    if name == "rule":
        return rule_demonstrator(**options)
    if name == "teacher":
        return teacher_demonstrator(**options)
    raise ValueError(f"unknown demonstrator {name!r}; valid: {list(DEMONSTRATORS)}")


# ------------------------------------------------------------------------------ collection
def run_episodes(
    env_kwargs: Mapping[str, Any],
    demonstrator: str,
    options: Mapping[str, Any] | None,
    seeds: list[int],
) -> Demonstrations:
    """Record one episode of `demonstrator` per seed in a fresh env built from `env_kwargs`."""
    from qlr.envs.env import LearningRateEnv

    env = LearningRateEnv(**dict(env_kwargs))
    act = make_demonstrator(demonstrator, options)
    rows: dict[str, list] = {name: [] for name in _FIELDS}
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            action = act(env, obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for name, value in zip(
                _FIELDS, (obs, action, reward, next_obs, terminated, truncated), strict=True
            ):
                rows[name].append(value)
            obs, done = next_obs, terminated or truncated
    return Demonstrations(
        observations=np.asarray(rows["observations"], dtype=np.float32),
        actions=np.asarray(rows["actions"], dtype=np.int64),
        rewards=np.asarray(rows["rewards"], dtype=np.float32),
        next_observations=np.asarray(rows["next_observations"], dtype=np.float32),
        terminated=np.asarray(rows["terminated"], dtype=bool),
        truncated=np.asarray(rows["truncated"], dtype=bool),
    )


def _run_chunk(args: tuple) -> Demonstrations:
    return run_episodes(*args)


def collect(
    env_kwargs: Mapping[str, Any],
    demonstrator: str,
    episodes: int,
    seed: int,
    options: Mapping[str, Any] | None = None,
    jobs: int = 1,
) -> Demonstrations:
    """`episodes` episodes of `demonstrator`, seeded from `seed`, in `jobs` worker processes.

    Episode i is seeded ``seed + i`` whatever the number of workers, so the result does not
    depend on `jobs`. The seeds are offset from the training envs' (``seed``, ``seed + 1``, ...)
    by the caller.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    seeds = [seed + i for i in range(episodes)]
    chunks = max(1, min(episodes, 4 * jobs))
    tasks = [(dict(env_kwargs), demonstrator, options, seeds[i::chunks]) for i in range(chunks)]
    parts = run_parallel(_run_chunk, tasks, jobs)
    return Demonstrations.concatenate(parts)


def demonstration_buffer(
    demos: Demonstrations, observation_space: Any, action_space: Any, n_steps: int, gamma: float
) -> Any:
    """An SB3 replay buffer holding `demos`, with n-step returns when ``n_steps > 1``.

    Episodes stay contiguous in one column of the buffer, so an n-step return never crosses from
    one episode into the next; a truncation bootstraps and a termination does not.
    """
    from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

    size = len(demos)
    if size < 2:
        raise ValueError(f"need at least 2 demonstration transitions, got {size}")
    kwargs = {"handle_timeout_termination": True}
    if n_steps > 1:
        buffer = NStepReplayBuffer(
            size,
            observation_space,
            action_space,
            "cpu",
            n_envs=1,
            n_steps=n_steps,
            gamma=gamma,
            **kwargs,
        )
    else:
        buffer = ReplayBuffer(size, observation_space, action_space, "cpu", n_envs=1, **kwargs)
    for i in range(size):
        done = bool(demos.terminated[i] or demos.truncated[i])
        buffer.add(
            demos.observations[i : i + 1],
            demos.next_observations[i : i + 1],
            demos.actions[i : i + 1],
            demos.rewards[i : i + 1],
            np.array([done]),
            [{"TimeLimit.truncated": bool(demos.truncated[i] and not demos.terminated[i])}],
        )
    return buffer
