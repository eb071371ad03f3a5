"""Training side of qlr: inner problems, inner optimizers and the learning-rate environment.

Importing this package registers four environments with Gymnasium, all `LearningRateEnv`:

* ``qlr/LearningRate-v2``: the shipped recipe's environment, the one
  ``experiments/configs/default.yaml`` trains the default policy on (`RECIPE_ENV_DEFAULTS`):
  v1 under the scheduler's rollback rule (a diverged block is undone, the episode goes on);
* ``qlr/LearningRate-v1``: the second design's recipe (`RECIPE_V1_ENV_DEFAULTS`), kept for
  what was trained and measured on it;
* ``qlr/LearningRate-v0``: the first design's defaults (`LearningRateEnv`'s own: eleven
  features, three actions, no guard), kept for what was trained and measured on it;
* ``qlr/NoiseLevel-v0``: the noise-level mode (minibatch problems, each rate factor with the
  batch kept or doubled, a budget in examples).

Keyword arguments to ``gymnasium.make`` override the registered ones.
"""

from typing import Any

import gymnasium

from qlr.envs.distributions import (
    DISTRIBUTIONS,
    FAMILIES,
    HELD_OUT_FAMILIES,
    TRAIN_FAMILIES,
    ProblemDistribution,
    make_distribution,
)
from qlr.envs.env import LearningRateEnv
from qlr.envs.optimizers import OPTIMIZERS, make_optimizer
from qlr.envs.problems import Problem

ENV_ID = "qlr/LearningRate-v0"
RECIPE_V1_ENV_ID = "qlr/LearningRate-v1"
RECIPE_ENV_ID = "qlr/LearningRate-v2"
NOISE_ENV_ID = "qlr/NoiseLevel-v0"
NOISE_ENV_DEFAULTS = {"problem": "train_stochastic", "batch_factors": (1.0, 2.0)}
# The second design's recipe, v1: frozen with its id, as every registered version is.
RECIPE_V1_ENV_DEFAULTS: dict[str, Any] = {
    "problem": "train",
    "optimizer": ("sgd", "momentum", "adam", "adamw", "adagrad"),
    "optimizer_kwargs": None,
    "steps_per_decision": 5,
    "action_factors": 5,
    "features": (
        "loss_change_step",
        "loss_change_block",
        "loss_above_best",
        "loss_rank",
        "loss_rise_fraction",
        "loss_noise",
        "nonfinite",
        "lr_drift",
        "update_slope",
        "update_slope_spread",
        "armijo_ratio",
        "update_size",
        "progress",
        "budget_known",
    ),
    "spike_factor": 10.0,
    "spike_cut": 0.1,
    "max_lr_growth": None,
    "lr_bounds": (1e-8, 10.0),
    "initial_lr_range": (1e-5, 1.0),
    "horizon": (10, 1000),
    "budget_known": 0.5,
    "reward_clip": 1.0,
    "divergence_penalty": 5.0,
    "divergence_factor": 1e3,
}
# The env section of experiments/configs/default.yaml, which the shipped default policy was
# trained on (its file records the same values). A recipe that trains on another environment
# registers it as the next version, so that this one stays what it was.
RECIPE_ENV_DEFAULTS: dict[str, Any] = {**RECIPE_V1_ENV_DEFAULTS, "rollback": True}

# No max_episode_steps: the horizon is an argument of the env itself, so the env behaves the
# same whether it is built by gymnasium.make or directly.
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="qlr.envs.env:LearningRateEnv")
if RECIPE_V1_ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=RECIPE_V1_ENV_ID,
        entry_point="qlr.envs.env:LearningRateEnv",
        kwargs=RECIPE_V1_ENV_DEFAULTS,
    )
if RECIPE_ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=RECIPE_ENV_ID, entry_point="qlr.envs.env:LearningRateEnv", kwargs=RECIPE_ENV_DEFAULTS
    )
if NOISE_ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=NOISE_ENV_ID, entry_point="qlr.envs.env:LearningRateEnv", kwargs=NOISE_ENV_DEFAULTS
    )

__all__ = [
    "DISTRIBUTIONS",
    "ENV_ID",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "OPTIMIZERS",
    "TRAIN_FAMILIES",
    "NOISE_ENV_ID",
    "RECIPE_ENV_DEFAULTS",
    "RECIPE_ENV_ID",
    "RECIPE_V1_ENV_DEFAULTS",
    "RECIPE_V1_ENV_ID",
    "LearningRateEnv",
    "Problem",
    "ProblemDistribution",
    "make_distribution",
    "make_optimizer",
]
