"""Policy files: a trained Q-network as plain tensors plus JSON, loaded without unpickling.

A policy file uses the safetensors layout, so any safetensors reader can open it too:

    8 bytes   little-endian u64 N, the length of the header
    N bytes   JSON: {tensor name: {"dtype", "shape", "data_offsets"}, "__metadata__": {"qlr": JSON}}
    the rest  the tensors' raw little-endian bytes

Nothing in the file is ever executed: the header is parsed as JSON and the tensors are read as
numbers. The metadata records the feature version, the action factors, the decision interval,
the network shape and any observation normalisation, so a file made for other features fails to
load with a clear error instead of silently misbehaving.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qlr._atomic import atomic_write_bytes
from qlr.control import check_factors
from qlr.deferral import SLOPE_FEATURE, Deferral
from qlr.features import FEATURE_VERSION, FEATURES_BY_VERSION, FEATURES_V2

FORMAT_NAME = "qlr-policy"
FORMAT_VERSION = 1
DEFAULT_POLICY_NAME = "default"
SHIPPED_POLICIES = {
    "default": "rate-only control for any loop (the default)",
    "noise": "rate and batch size for minibatch loops (pass batch_size to QLRScheduler)",
}
_POLICY_DIR = "policies"
_MAX_HEADER = 10_000_000  # a policy header is a few KB; more means a damaged or hostile file
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class PolicyFileError(ValueError):
    """A policy file is missing, damaged, or made for something this version cannot run."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot load policy file {os.fspath(path)!r}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


@dataclass
class PolicyMetadata:
    """What a policy file says about how its network must be fed and read."""

    action_factors: tuple[float, ...]
    decision_interval: int
    hidden_sizes: tuple[int, ...]
    activation: str = "relu"
    feature_version: int = FEATURE_VERSION
    feature_names: tuple[str, ...] = FEATURES_V2  # the rate-only default
    obs_mean: tuple[float, ...] | None = None
    obs_std: tuple[float, ...] | None = None
    spike_factor: float | None = None  # the spike guard it was trained with (None: none)
    spike_cut: float = 0.5
    batch_factors: tuple[float, ...] | None = None  # set for a controller that grows the batch
    max_batch_growth: float | None = None  # the batch bound it was trained with (x start)
    max_lr: float | None = None  # the rate's upper bound in training (None: qlr.control.MAX_LR)
    max_lr_growth: float | None = None  # bound relative to the starting rate (None: none)
    heads: int = 1  # an ensemble: the network's output holds one row of q-values per member
    defer: Deferral | None = None  # leave the slope rule only where the network is sure
    extra: dict[str, Any] = field(default_factory=dict)  # training config hash, scores, ...

    def to_json(self) -> str:
        data = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "feature_version": self.feature_version,
            "feature_names": list(self.feature_names),
            "action_factors": list(self.action_factors),
            "decision_interval": self.decision_interval,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "obs_mean": None if self.obs_mean is None else list(self.obs_mean),
            "obs_std": None if self.obs_std is None else list(self.obs_std),
            "spike_factor": self.spike_factor,
            "spike_cut": self.spike_cut,
            "extra": self.extra,
        }
        for key in ("max_lr", "max_lr_growth"):  # absent from older files: written when set
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.heads != 1:  # absent from single-network files, as in older ones
            data["heads"] = self.heads
        if self.defer is not None:
            data["defer_to_rule"] = self.defer.to_dict()
        if self.batch_factors is not None:  # absent from rate-only files, as in older ones
            data["batch_factors"] = list(self.batch_factors)
            data["max_batch_growth"] = self.max_batch_growth
        return json.dumps(data, sort_keys=True)


class Policy:
    """A greedy controller: a small MLP from observation to one q-value per action.

    An ensemble (``metadata.heads`` > 1) is one network whose output holds each member's
    q-values in turn; `q_values` is their mean. With ``metadata.defer`` the policy acts as the
    slope rule except where the network is sure it knows better (see `qlr.deferral`).

    Attributes:
        obs_dim: length of the observation the network reads.
        n_actions: number of actions (learning-rate factors, times batch factors if any).
        metadata: the `PolicyMetadata` the file carried.
    """

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], metadata: PolicyMetadata):
        self.layers = [(w.detach().float(), b.detach().float()) for w, b in layers]
        self.metadata = metadata
        self.obs_dim = self.layers[0][0].shape[1]
        self.heads = int(metadata.heads)
        outputs = self.layers[-1][0].shape[0]
        if self.heads < 1 or outputs % self.heads:
            raise ValueError(f"{outputs} outputs do not split into {self.heads} heads")
        self.n_actions = outputs // self.heads
        self._activation = ACTIVATIONS[metadata.activation]
        self._mean = _optional_tensor(metadata.obs_mean)
        self._std = _optional_tensor(metadata.obs_std)
        self._rule: tuple[int, tuple[int, int, int]] | None = None
        if metadata.defer is not None:
            if SLOPE_FEATURE not in metadata.feature_names or metadata.batch_factors:
                raise ValueError(
                    f"deferring to the slope rule needs a rate-only policy that reads "
                    f"{SLOPE_FEATURE!r}"
                )
            self._rule = (
                metadata.feature_names.index(SLOPE_FEATURE),
                metadata.defer.rule_indices(metadata.action_factors),
            )

    @property
    def action_factors(self) -> tuple[float, ...]:
        return self.metadata.action_factors

    @property
    def decision_interval(self) -> int:
        return self.metadata.decision_interval

    @property
    def batch_factors(self) -> tuple[float, ...] | None:
        """Batch-size factors of a noise-level controller; None for rate-only control."""
        return self.metadata.batch_factors

    def q_values(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Q-values for one observation (shape [obs_dim]) or a batch ([n, obs_dim]); for an
        ensemble, the mean over its heads."""
        mean: np.ndarray = self.head_q_values(obs).mean(axis=-2)
        return mean

    @torch.no_grad()
    def head_q_values(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Every head's q-values: shape [heads, n_actions] (or [n, heads, n_actions])."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        if x.shape[-1] != self.obs_dim:
            raise ValueError(f"observation has length {x.shape[-1]}, policy expects {self.obs_dim}")
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        for i, (w, b) in enumerate(self.layers):
            x = torch.nn.functional.linear(x, w, b)
            if i < len(self.layers) - 1:
                x = self._activation(x)
        return x.numpy().reshape(*x.shape[:-1], self.heads, self.n_actions)

    def decide(self, obs: np.ndarray | torch.Tensor) -> tuple[int, np.ndarray]:
        """The action for one observation and the (mean) q-values it was chosen from."""
        head_q = self.head_q_values(obs)
        q = head_q.mean(axis=0)
        if self._rule is None or self.metadata.defer is None:
            return int(np.argmax(q)), q
        slope_at, indices = self._rule
        rule = self.metadata.defer.rule_action(float(np.asarray(obs)[slope_at]), indices)
        return self.metadata.defer.choose(head_q, rule), q

    def act(self, obs: np.ndarray | torch.Tensor) -> int:
        """The action for one observation: greedy, or the rule where the network is unsure."""
        return self.decide(obs)[0]

    def __repr__(self) -> str:
        return (
            f"Policy(obs_dim={self.obs_dim}, n_actions={self.n_actions}, "
            f"hidden={list(self.metadata.hidden_sizes)}, "
            f"factors={[round(f, 4) for f in self.action_factors]}, "
            f"interval={self.decision_interval}"
            + (f", heads={self.heads}" if self.heads > 1 else "")
            + (f", defer_margin={self.metadata.defer.margin:g}" if self.metadata.defer else "")
            + (f", batch_factors={list(self.batch_factors)}" if self.batch_factors else "")
            + ")"
        )


def _optional_tensor(values: tuple[float, ...] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------------------------- writing
def save_policy(policy: Policy, path: str | os.PathLike) -> Path:
    """Write `policy` to `path` atomically (a complete file or none, never half of one)."""
    tensors: dict[str, np.ndarray] = {}
    for i, (w, b) in enumerate(policy.layers):
        tensors[f"layers.{i}.weight"] = w.numpy().astype("<f4")
        tensors[f"layers.{i}.bias"] = b.numpy().astype("<f4")
    header: dict[str, Any] = {"__metadata__": {"qlr": policy.metadata.to_json()}}
    offset = 0
    for name, array in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # safetensors aligns the data to 8 bytes
    payload = struct.pack("<Q", len(header_bytes)) + header_bytes
    payload += b"".join(tensors[name].tobytes() for name in tensors)
    path = Path(path)
    atomic_write_bytes(path, payload)
    return path


def config_hash(config: dict) -> str:
    """A short, stable fingerprint of a training configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------- reading
def default_policy_path(name: str = DEFAULT_POLICY_NAME) -> Path:
    """Where a policy shipped inside the package lives (see `SHIPPED_POLICIES`)."""
    return Path(str(resources.files("qlr") / _POLICY_DIR / f"{name}.qlr"))


def load_policy(path_or_name: str | os.PathLike | Policy = DEFAULT_POLICY_NAME) -> Policy:
    """Load a policy file, or a shipped one by name (``"default"``, ``"noise"``).

    Raises:
        PolicyFileError: the file is missing, truncated, corrupted, or was written for another
            feature version or format; the message names the file and the reason.
    """
    if isinstance(path_or_name, Policy):
        return path_or_name
    if os.fspath(path_or_name) in SHIPPED_POLICIES:
        path = default_policy_path(os.fspath(path_or_name))
    else:
        path = Path(path_or_name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyFileError(path, "no such file") from None
    except OSError as err:
        raise PolicyFileError(path, f"cannot read it ({err.strerror or err})") from None
    header, body = _split(path, data)
    metadata = _parse_metadata(path, header)
    tensors = _read_tensors(path, header, body)
    layers = _layers(path, tensors, metadata)
    return Policy(layers, metadata)


def _split(path: Path, data: bytes) -> tuple[dict, bytes]:
    if len(data) < 8:
        raise PolicyFileError(path, f"file is {len(data)} bytes, too short to be a policy file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise PolicyFileError(path, "header length runs past the end of the file (truncated?)")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PolicyFileError(path, f"header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise PolicyFileError(path, "header is not a JSON object")
    return header, data[8 + header_len :]


def _parse_metadata(path: Path, header: dict) -> PolicyMetadata:
    try:
        meta = json.loads(header["__metadata__"]["qlr"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise PolicyFileError(path, "no qlr metadata: not a qlr policy file") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise PolicyFileError(path, "metadata does not describe a qlr policy")
    if meta.get("format_version") != FORMAT_VERSION:
        raise PolicyFileError(
            path,
            f"file format version {meta.get('format_version')!r}, this qlr reads {FORMAT_VERSION}",
        )
    if meta.get("feature_version") not in range(1, FEATURE_VERSION + 1):
        raise PolicyFileError(
            path,
            f"written for feature version {meta.get('feature_version')!r}, but this qlr reads "
            f"versions 1 to {FEATURE_VERSION}; retrain or export it with a matching qlr",
        )
    try:
        factors = tuple(float(f) for f in meta["action_factors"])
        interval = int(meta["decision_interval"])
        hidden = tuple(int(h) for h in meta["hidden_sizes"])
        activation = str(meta["activation"])
        names = tuple(str(n) for n in meta["feature_names"])
        mean = None if meta["obs_mean"] is None else tuple(float(x) for x in meta["obs_mean"])
        std = None if meta["obs_std"] is None else tuple(float(x) for x in meta["obs_std"])
        extra = dict(meta.get("extra") or {})
        spike = meta.get("spike_factor")  # absent from files older than feature version 2
        spike = None if spike is None else float(spike)
        spike_cut = float(meta.get("spike_cut", 0.5))
        batch = meta.get("batch_factors")  # absent from rate-only files
        batch = None if batch is None else tuple(float(f) for f in batch)
        growth = meta.get("max_batch_growth")
        growth = None if growth is None else float(growth)
        max_lr = meta.get("max_lr")
        max_lr = None if max_lr is None else float(max_lr)
        lr_growth = meta.get("max_lr_growth")
        lr_growth = None if lr_growth is None else float(lr_growth)
        heads = int(meta.get("heads", 1))  # absent from single-network files
        defer = meta.get("defer_to_rule")
        defer = None if defer is None else Deferral.from_dict(defer)
    except (KeyError, TypeError, ValueError) as err:
        raise PolicyFileError(path, f"metadata field missing or malformed ({err})") from None
    # Features keep their meaning across versions; an older file reads a subset of them.
    known = FEATURES_BY_VERSION[meta["feature_version"]]
    if not names or len(set(names)) != len(names) or not set(names) <= set(known):
        raise PolicyFileError(
            path, f"feature names {list(names)} are not distinct names from {list(known)}"
        )
    if spike is not None and not (math.isfinite(spike) and spike > 1):
        raise PolicyFileError(path, f"spike_factor {spike} is not a number > 1")
    if not 0 < spike_cut < 1:
        raise PolicyFileError(path, f"spike_cut {spike_cut} is not in (0, 1)")
    try:
        check_factors(list(factors), "action factors")
    except ValueError as err:
        raise PolicyFileError(path, str(err)) from None
    if interval < 1:
        raise PolicyFileError(path, f"decision interval {interval} is not positive")
    if batch is not None:
        try:
            check_factors(list(batch), "batch factors", keeps="keep the batch size")
        except ValueError as err:
            raise PolicyFileError(path, str(err)) from None
    if growth is not None and not (math.isfinite(growth) and growth >= 1):
        raise PolicyFileError(path, f"max_batch_growth {growth} is not a number >= 1")
    if max_lr is not None and not (math.isfinite(max_lr) and max_lr > 0):
        raise PolicyFileError(path, f"max_lr {max_lr} is not a positive number")
    if lr_growth is not None and not (math.isfinite(lr_growth) and lr_growth > 1):
        raise PolicyFileError(path, f"max_lr_growth {lr_growth} is not a number > 1")
    if heads < 1:
        raise PolicyFileError(path, f"heads {heads} is not a positive integer")
    if defer is not None:
        try:
            defer.rule_indices(factors)
        except ValueError as err:
            raise PolicyFileError(path, f"cannot defer to the rule: {err}") from None
        if SLOPE_FEATURE not in names:
            raise PolicyFileError(path, f"cannot defer to the rule: it reads {SLOPE_FEATURE!r}")
    if activation not in ACTIVATIONS:
        raise PolicyFileError(path, f"activation {activation!r} not one of {sorted(ACTIVATIONS)}")
    for name, stats in (("obs_mean", mean), ("obs_std", std)):
        if stats is not None and (len(stats) != len(names) or not all(map(math.isfinite, stats))):
            raise PolicyFileError(path, f"{name} must hold {len(names)} finite numbers")
    if (mean is None) != (std is None) or (std is not None and min(std) <= 0):
        raise PolicyFileError(path, "obs_mean and obs_std must both be given, with std > 0")
    return PolicyMetadata(
        action_factors=factors,
        decision_interval=interval,
        hidden_sizes=hidden,
        activation=activation,
        feature_version=int(meta["feature_version"]),
        feature_names=names,
        obs_mean=mean,
        obs_std=std,
        spike_factor=spike,
        spike_cut=spike_cut,
        batch_factors=batch,
        max_batch_growth=growth,
        max_lr=max_lr,
        max_lr_growth=lr_growth,
        heads=heads,
        defer=defer,
        extra=extra,
    )


def _read_tensors(path: Path, header: dict, body: bytes) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            if spec["dtype"] != "F32":
                raise ValueError(spec["dtype"])
            shape = [int(s) for s in spec["shape"]]
            begin, end = (int(o) for o in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise PolicyFileError(path, f"tensor {name!r} has a malformed description") from None
        expected = int(np.prod(shape)) * 4
        if not 0 <= begin <= end <= len(body) or end - begin != expected:
            raise PolicyFileError(path, f"tensor {name!r} runs past the end of the file")
        array = np.frombuffer(body[begin:end], dtype="<f4").reshape(shape)
        if not np.all(np.isfinite(array)):
            raise PolicyFileError(path, f"tensor {name!r} holds NaN or infinite values")
        tensors[name] = torch.from_numpy(array.astype(np.float32))
    return tensors


def _layers(path: Path, tensors: dict, meta: PolicyMetadata) -> list:
    n_actions = len(meta.action_factors) * len(meta.batch_factors or (1.0,)) * meta.heads
    sizes = [len(meta.feature_names), *meta.hidden_sizes, n_actions]
    layers = []
    for i in range(len(sizes) - 1):
        w, b = tensors.get(f"layers.{i}.weight"), tensors.get(f"layers.{i}.bias")
        if w is None or b is None:
            raise PolicyFileError(path, f"layer {i} is missing")
        if tuple(w.shape) != (sizes[i + 1], sizes[i]) or tuple(b.shape) != (sizes[i + 1],):
            raise PolicyFileError(
                path,
                f"layer {i} has shape {tuple(w.shape)}, the metadata implies "
                f"{(sizes[i + 1], sizes[i])}",
            )
        layers.append((w, b))
    if len(tensors) != 2 * len(layers):
        raise PolicyFileError(path, "file holds tensors the metadata does not describe")
    return layers
