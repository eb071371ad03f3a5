"""Training side of qlr: inner problems, inner optimizers and the learning-rate environment.

Importing this package registers ``qlr/LearningRate-v0`` (rate-only control) and
``qlr/NoiseLevel-v0`` (the same environment in its noise-level mode: minibatch problems, each
rate factor with the batch kept or doubled, a budget in examples) with Gymnasium.
"""

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
NOISE_ENV_ID = "qlr/NoiseLevel-v0"
NOISE_ENV_DEFAULTS = {"problem": "train_stochastic", "batch_factors": (1.0, 2.0)}

# No max_episode_steps: the horizon is an argument of the env itself, so the env behaves the
# same whether it is built by gymnasium.make or directly.
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="qlr.envs.env:LearningRateEnv")
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
    "LearningRateEnv",
    "Problem",
    "ProblemDistribution",
    "make_distribution",
    "make_optimizer",
]
