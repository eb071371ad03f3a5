"""The typed configuration of a DQN training run, loaded from YAML (``qlr train --config``).

A config file holds the fields of `TrainConfig`; ``env`` holds keyword arguments of
`qlr.envs.LearningRateEnv`, ``dqn`` those of stable-baselines3's ``DQN`` under SB3's own names,
``eval`` and ``final_eval`` those of `qlr.agents.bench.evaluate.EvalConfig`. Every key is checked:
a misspelt one fails at once with a ValueError that lists the valid keys, instead of being
ignored for a 25-minute run.

`load_config` returns the *resolved* config: defaults of the env, DQN and evaluation filled in
from their signatures, so the copy saved in a run directory still describes the run when a
default changes later.

Example:
    >>> config = load_config("tiny", ["env.horizon=20", "seed=3"])  # or a path to a YAML file
    >>> config.env["horizon"], config.seed
    (20, 3)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from qlr.agents._checks import check_keys
from qlr.agents.bench.evaluate import EvalConfig
from qlr.agents.catalog import find_config

VEC_ENVS = ("subproc", "dummy")

# DQN arguments that `qlr train` sets itself; a config may not set them.
_MANAGED_DQN = {
    "policy": "the policy is always 'MlpPolicy' (the export needs a plain MLP)",
    "env": "the environments are built from the 'env' section",
    "seed": "set the top-level 'seed' instead",
    "tensorboard_log": "the TensorBoard folder is always <run dir>/tensorboard",
    "_init_setup_model": "internal to stable-baselines3",
}
# policy_kwargs that keep the Q-network exportable to a qlr policy file (flatten + MLP).
POLICY_KWARGS = ("net_arch", "activation_fn", "optimizer_kwargs")
ACTIVATIONS = ("relu", "tanh")

# Demonstrations for DQfD (`qlr.agents.learn.dqfd`); with no source the run is a plain DQN.
DEMONSTRATORS = (None, "rule", "teacher")
DEMONSTRATION_DEFAULTS: dict[str, Any] = {
    "source": None,  # "rule" (qlr.rules.slope_rule) or "teacher" (the lookahead teacher)
    "episodes": 200,  # demonstration episodes, collected before training
    "options": {},  # the demonstrator's keyword arguments (rule thresholds, teacher horizon)
    "margin": 0.8,  # large-margin loss: the demonstrated action's value stays this far ahead
    "margin_weight": 1.0,  # weight of the margin loss against the TD loss
    "demo_batch_size": 32,  # demonstrations joined to every batch of own transitions
    "pretrain_steps": 5_000,  # gradient steps on the demonstrations alone, before interaction
    "jobs": 2,  # worker processes that collect them
}

# The periodic evaluation runs every `eval_freq` transitions, so it is small by default (a few
# seconds: one instance per family, two starting rates, 100 steps) and uses its own instance
# seeds: the model picked on it is then reported on the final evaluation's instances (seeded
# like `qlr evaluate`), which played no part in picking it.
VALIDATION_SEED = 2_000_003
PERIODIC_EVAL_DEFAULTS: dict[str, Any] = {
    "instances": 1,
    "initial_lrs": [1e-4, 1e-2],
    "steps": 100,
    "seed": VALIDATION_SEED,
}


@dataclass
class TrainConfig:
    """Everything that defines a DQN training run of a learning-rate controller."""

    name: str = "run"
    """Label of the run; the run directory is ``runs/{name}__{seed}__{time}``. Defaults to the
    YAML file's stem."""
    env: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `LearningRateEnv` (problem, optimizer, optimizer_kwargs,
    steps_per_decision, action_factors, lr_bounds, initial_lr_range, horizon, reward_clip,
    divergence_penalty, divergence_factor)."""
    dqn: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of stable-baselines3's ``DQN`` (learning_rate, buffer_size,
    learning_starts, batch_size, tau, gamma, train_freq, gradient_steps, target_update_interval,
    exploration_fraction, exploration_initial_eps, exploration_final_eps, max_grad_norm,
    policy_kwargs, ...). ``policy_kwargs.activation_fn`` is a name: "relu" or "tanh"."""
    total_timesteps: int = 100_000
    """Environment transitions (decisions) to learn from, over all environments."""
    n_envs: int = 2
    """Environments stepped in parallel."""
    vec_env: str = "subproc"
    """"subproc" (one process per environment) or "dummy" (all in this process). One
    environment always runs in this process."""
    seed: int = 0
    """Seeds the environments, the exploration, the replay sampling and the network."""
    checkpoint_freq: int = 50_000
    """Transitions between checkpoints (model and replay buffer); 0 disables them."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept on disk; older ones are deleted (a replay buffer is large)."""
    eval_freq: int = 25_000
    """Transitions between held-out evaluations; 0 disables them (no best_policy.qlr then)."""
    eval: dict[str, Any] = field(default_factory=lambda: dict(PERIODIC_EVAL_DEFAULTS))
    """`EvalConfig` fields of the periodic held-out evaluation that picks the best model. Unset
    fields take `PERIODIC_EVAL_DEFAULTS` (small, own seeds), then `EvalConfig`'s defaults."""
    final_eval: dict[str, Any] | None = field(default_factory=dict)
    """`EvalConfig` fields of the end-of-training report (unset fields: `EvalConfig`'s defaults,
    the instances `qlr evaluate` uses); null skips it."""
    eval_jobs: int = 2
    """Worker processes for the one-off evaluation runs (reference rows, final evaluation); the
    periodic policy evaluations run in this process, where a pool would cost more than it saves."""
    log_freq: int = 1_000
    """Transitions between the TensorBoard points of the rollout statistics and q-values."""
    demonstrations: dict[str, Any] = field(default_factory=lambda: dict(DEMONSTRATION_DEFAULTS))
    """DQfD's demonstrations: their ``source`` (``rule``, ``teacher`` or null for a plain DQN),
    ``episodes``, the demonstrator's ``options``, ``margin``, ``margin_weight``,
    ``demo_batch_size``, ``pretrain_steps`` and the collecting ``jobs``
    (`DEMONSTRATION_DEFAULTS`)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, no tuples) that YAML and JSON can write."""
        return _plain(dataclasses.asdict(self))

    def eval_config(self) -> EvalConfig:
        """The periodic evaluation as an `EvalConfig`."""
        return make_eval_config(self.eval)

    def final_eval_config(self) -> EvalConfig | None:
        """The end-of-training evaluation as an `EvalConfig`, or None when it is disabled."""
        return None if self.final_eval is None else make_eval_config(self.final_eval)


# ------------------------------------------------------------------------------ YAML
class ConfigLoader(yaml.SafeLoader):
    """A SafeLoader that reads ``1e-4`` and ``3e5`` as floats.

    YAML 1.1 requires a dot in a float (``1.0e-4``), so PyYAML reads ``1e-4`` as a string,
    which would reach the optimizer as a learning rate of ``"1e-4"``.
    """


ConfigLoader.yaml_implicit_resolvers = {
    key: list(resolvers) for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with `ConfigLoader` (safe, floats like ``1e-4`` included)."""
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader: builds plain data only


def dump_config(config: TrainConfig) -> str:
    """The config as YAML text that `load_config` reads back to an equal config."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)


# ------------------------------------------------------------------------------ loading
def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, check every key and fill in defaults.

    Args:
        path: a YAML file whose top level holds `TrainConfig` fields, or the name of a shipped
            config (``"default"``, ``"tiny"``, ``"noise"``: `qlr.agents.catalog`).
        overrides: strings ``"key=value"``; a dotted key reaches into a section
            (``"env.horizon=40"``, ``"dqn.policy_kwargs.net_arch=[32, 32]"``). Values are YAML
            scalars or flow collections, so ``1e-4`` is a float and ``null`` is None.

    Raises:
        UsageError: (a ValueError) no such file or shipped config, or a file of another kind (a
            benchmark suite, a search space); the message lists the shipped configs.
        ValueError: an unknown key at any level (naming it and listing the valid ones), a
            malformed override or a value of the wrong kind.
    """
    path = find_config(path, "train")
    data = parse_yaml(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level of a config must be a mapping, got {data!r}")
    data.setdefault("name", path.stem)
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the nested dict `data`, creating sections as needed."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {override!r} is not of the form key=value (env.horizon=40)")
    parts = key.split(".")
    target = data
    for i, part in enumerate(parts[:-1]):
        if target.get(part) is None:
            target[part] = {}
        target = target[part]
        if not isinstance(target, dict):
            where = ".".join(parts[: i + 1])
            raise ValueError(f"override {override!r}: {where!r} is not a section")
    target[parts[-1]] = parse_yaml(text) if text.strip() else None


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build a checked, resolved `TrainConfig` from plain data (e.g. a parsed YAML file)."""
    data = dict(data)
    check_keys("config", data, [f.name for f in dataclasses.fields(TrainConfig)])
    defaults = TrainConfig()
    top = {}
    for name in ("name", "vec_env"):
        top[name] = str(data.get(name, getattr(defaults, name)))
    for name, minimum in (
        ("total_timesteps", 1),
        ("n_envs", 1),
        ("seed", 0),
        ("checkpoint_freq", 0),
        ("keep_checkpoints", 1),
        ("eval_freq", 0),
        ("eval_jobs", 1),
        ("log_freq", 1),
    ):
        top[name] = _integer(name, data.get(name, getattr(defaults, name)), minimum)
    if top["vec_env"] not in VEC_ENVS:
        raise ValueError(f"vec_env must be one of {list(VEC_ENVS)}, got {top['vec_env']!r}")
    final_eval = data.get("final_eval", {})
    return TrainConfig(
        **top,
        env=resolve_env_kwargs(_section("env", data.get("env"))),
        dqn=resolve_dqn_kwargs(_section("dqn", data.get("dqn"))),
        eval=resolve_eval_fields(
            "eval", _section("eval", data.get("eval")), base=PERIODIC_EVAL_DEFAULTS
        ),
        final_eval=None
        if final_eval is None
        else resolve_eval_fields("final_eval", _section("final_eval", final_eval)),
        demonstrations=resolve_demonstrations(
            _section("demonstrations", data.get("demonstrations"))
        ),
    )


# ------------------------------------------------------------------------------ sections
def env_parameters() -> dict[str, Any]:
    """`LearningRateEnv`'s keyword arguments and their defaults."""
    # Here rather than at the top, as stable-baselines3 below: `qlr --help` loads this module,
    # and gymnasium (which qlr.envs registers with) and SB3 take about a second to import.
    from qlr.envs.env import LearningRateEnv

    return _defaults(LearningRateEnv)


def dqn_parameters() -> dict[str, Any]:
    """The ``DQN`` keyword arguments a config may set, with SB3's defaults."""
    from stable_baselines3 import DQN

    return {k: v for k, v in _defaults(DQN).items() if k not in _MANAGED_DQN}


def resolve_env_kwargs(env: Mapping[str, Any]) -> dict[str, Any]:
    """Check the env section's keys and fill in `LearningRateEnv`'s defaults."""
    params = env_parameters()
    check_keys("env", env, params)
    return {k: _coerce(env[k], default) if k in env else default for k, default in params.items()}


def resolve_dqn_kwargs(dqn: Mapping[str, Any]) -> dict[str, Any]:
    """Check the dqn section's keys (and policy_kwargs') and fill in SB3's defaults."""
    for key in dqn:
        if key in _MANAGED_DQN:
            raise ValueError(f"dqn.{key} cannot be set in a config: {_MANAGED_DQN[key]}")
    params = dqn_parameters()
    check_keys("dqn", dqn, params)
    resolved = {k: _coerce(dqn[k], d) if k in dqn else d for k, d in params.items()}
    if isinstance(resolved["train_freq"], list):  # SB3 wants (n, "step" | "episode")
        resolved["train_freq"] = tuple(resolved["train_freq"])
    policy_kwargs = resolved.get("policy_kwargs")
    if policy_kwargs is not None:
        policy_kwargs = dict(_section("dqn.policy_kwargs", policy_kwargs))
        check_keys("dqn.policy_kwargs", policy_kwargs, POLICY_KWARGS)
        activation = policy_kwargs.get("activation_fn", "relu")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"dqn.policy_kwargs.activation_fn must be one of {list(ACTIVATIONS)} (the ones "
                f"a policy file supports), got {activation!r}"
            )
        resolved["policy_kwargs"] = policy_kwargs
    return resolved


def resolve_demonstrations(section: Mapping[str, Any]) -> dict[str, Any]:
    """Check the demonstrations section and fill in `DEMONSTRATION_DEFAULTS`."""
    check_keys("demonstrations", section, DEMONSTRATION_DEFAULTS)
    resolved = {k: section.get(k, d) for k, d in DEMONSTRATION_DEFAULTS.items()}
    if resolved["source"] not in DEMONSTRATORS:
        raise ValueError(
            f"demonstrations.source must be one of {list(DEMONSTRATORS)}, got "
            f"{resolved['source']!r}"
        )
    for name, minimum in (("episodes", 1), ("demo_batch_size", 1), ("pretrain_steps", 0)):
        resolved[name] = _integer(f"demonstrations.{name}", resolved[name], minimum)
    resolved["jobs"] = _integer("demonstrations.jobs", resolved["jobs"], 1)
    for name in ("margin", "margin_weight"):
        value = resolved[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"demonstrations.{name} must be a number >= 0, got {value!r}")
        resolved[name] = float(value)
    resolved["options"] = dict(_section("demonstrations.options", resolved["options"]))
    return _plain(resolved)


def resolve_eval_fields(
    section: str, fields: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check an evaluation section's keys; fill in `base`, then `EvalConfig`'s defaults."""
    params = {f.name: _field_default(f) for f in dataclasses.fields(EvalConfig)}
    check_keys(section, fields, params)
    params.update(base or {})
    return _plain({k: _coerce(fields[k], d) if k in fields else d for k, d in params.items()})


def make_eval_config(fields: Mapping[str, Any]) -> EvalConfig:
    """An `EvalConfig` from a (resolved) evaluation section; lists become tuples."""
    fields = resolve_eval_fields("eval", fields)
    return EvalConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def dqn_model_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The ``DQN`` keyword arguments of `config`, with activation names turned into modules."""
    kwargs = dict(config.dqn)
    if kwargs.get("policy_kwargs") is not None:
        policy_kwargs = dict(kwargs["policy_kwargs"])
        name = policy_kwargs.pop("activation_fn", "relu")
        policy_kwargs["activation_fn"] = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[name]
        kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


# ------------------------------------------------------------------------------ helpers
def _section(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of keyword arguments, got {value!r}")
    return dict(value)


def _defaults(callable_: Any) -> dict[str, Any]:
    """Keyword parameters of a class or function and their defaults (None when required)."""
    params = inspect.signature(callable_).parameters.values()
    return {
        p.name: None if p.default is inspect.Parameter.empty else _plain(p.default)
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _coerce(value: Any, default: Any) -> Any:
    """Turn ``3e5`` into 300000 where the default is an integer (counts, sizes, intervals)."""
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return int(value)
    return value


def _integer(name: str, value: Any, minimum: int) -> int:
    value = _coerce(value, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars to Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()
    return value
