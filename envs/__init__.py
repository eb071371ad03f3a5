"""Training side of qlr: inner problems, inner optimizers and the learning-rate environment.

Importing this package registers ``qlr/LearningRate-v0`` with Gymnasium.
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

if ENV_ID not in gymnasium.registry:
    # No max_episode_steps: the horizon is an argument of the env itself, so the env behaves
    # the same whether it is built by gymnasium.make or directly.
    gymnasium.register(id=ENV_ID, entry_point="qlr.envs.env:LearningRateEnv")

__all__ = [
    "DISTRIBUTIONS",
    "ENV_ID",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "OPTIMIZERS",
    "TRAIN_FAMILIES",
    "LearningRateEnv",
    "Problem",
    "ProblemDistribution",
    "make_distribution",
    "make_optimizer",
]
