"""qlr: learning-rate controllers learned with deep Q-learning, deployed as PyTorch schedulers.

`import qlr` needs only torch and numpy. Training lives in `qlr.envs` (Gymnasium) and
`qlr.agents` (stable-baselines3), which import this package and never the other way round.
"""

from qlr.batching import DynamicBatchSampler
from qlr.control import ACTION_SETS, LRController, resolve_action_factors, scale_lr
from qlr.features import FEATURE_NAMES, FEATURE_VERSION, OBS_DIM, FeatureTracker
from qlr.policy import Policy, PolicyFileError, PolicyMetadata, load_policy, save_policy
from qlr.rules import slope_rule
from qlr.scheduler import QLRScheduler

__version__ = "0.1.0"

__all__ = [
    "ACTION_SETS",
    "DynamicBatchSampler",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "OBS_DIM",
    "FeatureTracker",
    "LRController",
    "Policy",
    "PolicyFileError",
    "PolicyMetadata",
    "QLRScheduler",
    "load_policy",
    "resolve_action_factors",
    "save_policy",
    "scale_lr",
    "slope_rule",
]
