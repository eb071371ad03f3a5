"""Turn a trained stable-baselines3 DQN into a deployable qlr policy file (``qlr export``).

SB3's DQN Q-network is a flatten feature extractor followed by an ``nn.Sequential`` of Linear
layers and activations. The export copies those weights into `qlr.policy.Policy`, which needs
only torch to run and loads without unpickling. The action factors and the decision interval
come from the env config the model was trained with (a run's ``config.yaml``): the network
alone does not know what its actions mean.

Example:
    $ qlr export runs/default__0__20250101-120000 my_policy.qlr
    $ qlr export runs/default__0__20250101-120000/best_model.zip my_policy.qlr
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from qlr.agents.learn.config import load_config, resolve_env_kwargs
from qlr.agents.learn.run_files import CONFIG_FILE, MODEL_FILES, latest_checkpoint
from qlr.control import resolve_action_factors, resolve_batch_factors, resolve_features
from qlr.features import FEATURE_VERSION
from qlr.policy import Policy, PolicyMetadata, config_hash, load_policy, save_policy

# stable-baselines3 is imported where a model is read: `qlr --help` loads this module to list
# `qlr export`, and SB3 (gymnasium with it) takes about a second to import.
if TYPE_CHECKING:
    from stable_baselines3 import DQN

_ACTIVATION_NAMES = {nn.ReLU: "relu", nn.Tanh: "tanh"}


def q_network_layers(
    q_net: nn.Module,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple[int, ...], str]:
    """The (weight, bias) pairs, hidden sizes and activation of an SB3 ``QNetwork``.

    Raises:
        ValueError: the network is not a flatten extractor plus an MLP with one activation kind
            that a policy file supports (relu or tanh), or its weights are not all finite.
    """
    from stable_baselines3.common.torch_layers import FlattenExtractor

    extractor = getattr(q_net, "features_extractor", None)
    body = getattr(q_net, "q_net", None)
    if not isinstance(extractor, FlattenExtractor) or not isinstance(body, nn.Sequential):
        raise ValueError(
            "can only export a DQN 'MlpPolicy' Q-network (FlattenExtractor + nn.Sequential), "
            f"got {type(q_net).__name__} with extractor {type(extractor).__name__}"
        )
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []
    activations: set[str] = set()
    for module in body:
        if isinstance(module, nn.Linear):
            if module.bias is None:
                raise ValueError("a Linear layer without bias cannot be exported")
            layers.append(
                (module.weight.detach().cpu().clone(), module.bias.detach().cpu().clone())
            )
        elif type(module) in _ACTIVATION_NAMES:
            activations.add(_ACTIVATION_NAMES[type(module)])
        else:
            raise ValueError(
                f"cannot export a Q-network containing {type(module).__name__}; "
                f"supported: Linear, {', '.join(c.__name__ for c in _ACTIVATION_NAMES)}"
            )
    if not layers or not isinstance(body[-1], nn.Linear):
        raise ValueError("the Q-network must end with a Linear layer")
    if len(activations) > 1:
        raise ValueError(f"the Q-network mixes activations {sorted(activations)}")
    if not all(bool(torch.isfinite(t).all()) for layer in layers for t in layer):
        # Training blew up (a non-finite observation or reward reached the network): a file
        # holding NaN would only fail later, at load time, far from the cause.
        raise ValueError("the Q-network holds NaN or infinite weights; training diverged")
    hidden = tuple(int(w.shape[0]) for w, _ in layers[:-1])
    return layers, hidden, activations.pop() if activations else "relu"


def policy_from_model(
    model: DQN, train_config: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> Policy:
    """A `Policy` holding `model`'s Q-network, described by the config it was trained with.

    Args:
        model: a stable-baselines3 DQN with an ``MlpPolicy``.
        train_config: the run's resolved config (`TrainConfig.to_dict()`); its ``env`` section
            gives the action factors and the decision interval.
        extra: more facts for the file's metadata (timesteps, scores, ...).

    Raises:
        ValueError: the network does not match the observation or the action factors.
    """
    layers, _, activation = q_network_layers(model.q_net)
    extra = {"num_timesteps": int(model.num_timesteps), **dict(extra or {})}
    return Policy(layers, policy_metadata(layers, activation, train_config, extra))


def policy_metadata(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    activation: str,
    train_config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> PolicyMetadata:
    """The metadata of a policy file for the network `layers`, trained under `train_config`.

    The env section says what the network reads and what its actions mean (the features, the
    factors, the interval, the guards and bounds it was trained with); the config itself and its
    hash go into ``extra``, so a held-out report knows which families the policy touched.

    Raises:
        ValueError: the network does not match the observation or the action factors.
    """
    env = _env_section(train_config)
    factors = resolve_action_factors(env["action_factors"])
    interval = int(env["steps_per_decision"])
    obs_dim, n_actions = int(layers[0][0].shape[1]), int(layers[-1][0].shape[0])
    batch_factors = resolve_batch_factors(env.get("batch_factors"))
    features = resolve_features(env.get("features"), batch=batch_factors is not None)
    if obs_dim != len(features):
        raise ValueError(
            f"the Q-network reads {obs_dim} features, the config selects {len(features)}"
        )
    expected = len(factors) * len(batch_factors or (1.0,))
    if n_actions != expected:
        raise ValueError(
            f"the Q-network has {n_actions} outputs but the config's action factors "
            f"{list(factors)} and batch factors {batch_factors} make {expected}: was it trained "
            "with this config?"
        )
    return PolicyMetadata(
        action_factors=factors,
        decision_interval=interval,
        hidden_sizes=tuple(int(w.shape[0]) for w, _ in layers[:-1]),
        activation=activation,
        feature_version=FEATURE_VERSION,
        feature_names=features,
        spike_factor=env.get("spike_factor"),
        spike_cut=float(env.get("spike_cut", 0.5)),
        batch_factors=batch_factors,
        max_batch_growth=None if batch_factors is None else float(env["max_batch_growth"]),
        max_lr=float(env["lr_bounds"][1]) if env.get("lr_bounds") else None,
        max_lr_growth=env.get("max_lr_growth"),
        extra={
            "config_hash": config_hash(dict(train_config)),
            "train_config": dict(train_config),
            "lr_bounds": list(env.get("lr_bounds") or []),
            **dict(extra or {}),
        },
    )


def export_model(
    model: DQN,
    path: str | os.PathLike,
    train_config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model`'s Q-network to the policy file `path` (atomically)."""
    return save_policy(policy_from_model(model, train_config, extra), path)


def _env_section(train_config: Mapping[str, Any]) -> dict[str, Any]:
    """The env section with `LearningRateEnv`'s defaults for anything it leaves out."""
    return resolve_env_kwargs(dict(train_config.get("env") or {}))


# ---------------------------------------------------------------------------------- files
def find_model(source: Path, which: str = "final") -> Path:
    """The model zip that `source` (a run directory or a zip) designates.

    In a run directory, `which` picks ``final_model.zip``, ``best_model.zip`` or the latest
    checkpoint (``"latest"``); ``"final"`` falls back to the latest checkpoint of a run that
    has not finished.
    """
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is neither a run directory nor a model zip")
    if which in MODEL_FILES and (source / MODEL_FILES[which]).is_file():
        return source / MODEL_FILES[which]
    if which in ("final", "latest"):
        checkpoint = latest_checkpoint(source / "checkpoints")
        if checkpoint is not None:
            return checkpoint.model
    raise FileNotFoundError(f"{source} holds no {which} model")


def find_config(model_path: Path) -> Path:
    """The ``config.yaml`` of the run a model zip belongs to (its folder or a parent)."""
    for folder in [model_path.parent, *model_path.parent.parents][:3]:
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    raise FileNotFoundError(
        f"no {CONFIG_FILE} beside {model_path} or in its parent folders; pass --config with "
        "the config the model was trained with"
    )


def export_file(
    source: str | os.PathLike,
    out: str | os.PathLike,
    which: str = "final",
    config_path: str | os.PathLike | None = None,
) -> Path:
    """Export the model that `source` designates to the policy file `out`."""
    from stable_baselines3 import DQN

    model_path = find_model(Path(source), which)
    config_path = Path(config_path) if config_path is not None else find_config(model_path)
    train_config = load_config(config_path).to_dict()
    model = DQN.load(model_path, device="cpu")
    return export_model(model, out, train_config, extra={"source": model_path.name})


# ---------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a run directory or an SB3 model zip")
    parser.add_argument("out", type=Path, help="the policy file to write (e.g. policy.qlr)")
    parser.add_argument(
        "--model",
        choices=["final", "best", "latest"],
        default="final",
        help="which model of a run directory (default: final, else the latest checkpoint)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="the training config, if not in the run dir"
    )


def run(args: argparse.Namespace) -> int:
    path = export_file(args.source, args.out, args.model, args.config)
    print(f"wrote {path}: {load_policy(path)!r}")
    return 0
