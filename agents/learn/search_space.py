"""The search file of ``qlr sweep``: which config values to try, how, and how to stop early.

A search file is YAML (``experiments/configs/sweep_example.yaml`` has every key)::

    space:                              # config keys, dotted as in `qlr train --set`
      dqn.learning_rate: [1e-4, 1e-3]   # a list: every value (a grid)
      dqn.gamma: {uniform: [0.8, 0.99]} # a distribution: drawn num_samples times
    seeds: [0, 1]                       # every point trains once per seed
    num_samples: 4                      # draws of the distributions
    algorithm: random                   # or a Ray Tune searcher name: optuna, hyperopt, ...
    scheduler: {name: asha, grace_period: 50000, reduction_factor: 3}
    cpus_per_trial: 1
    max_concurrent_trials: null

Distributions: ``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``randint: [lo, hi]`` (both
ends included), ``choice: [a, b, ...]``. With ``algorithm: random`` (Ray Tune's basic variant
generator) the trials are every combination of the lists, times ``num_samples`` draws of the
distributions, times the seeds. Another algorithm proposes ``num_samples`` points one after
another from what it has seen: lists become choices, and one seed is allowed (a point is only
comparable to another under the same seed). The scheduler ``asha`` stops trials whose held-out
score trails the others' at the same number of transitions (``grace_period``: transitions a
trial always gets; ``reduction_factor``: how many trials compete for each one kept); ``fifo``
(the default) runs every trial to the end.

This module reads and checks the file (every key, against the config it will vary) without Ray;
`tune_param_space`, `tune_searcher` and `tune_scheduler` build Ray Tune's objects from it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qlr.agents._checks import check_keys
from qlr.agents.learn.config import TrainConfig, apply_override, config_from_dict, parse_yaml

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
SCHEDULERS = ("fifo", "asha")
RANDOM_SEARCH = "random"
# Keys a trial's overrides may not set: the seed comes from `seeds`, the name labels the sweep.
_RESERVED = {"seed": "list seeds under 'seeds'", "name": "the sweep's trials share its name"}


@dataclass(frozen=True)
class SearchSpace:
    """A parsed, checked search file."""

    space: dict[str, Any]
    """Config key -> a list of values (grid) or ``{distribution: arguments}``."""
    seeds: tuple[int, ...] = ()
    """Seeds each point trains with; empty: the config's own seed."""
    num_samples: int = 1
    """Draws of the distributions (random search), or trials proposed (other algorithms)."""
    algorithm: str = RANDOM_SEARCH
    """``random``, or a Ray Tune searcher name (its package installed)."""
    scheduler: dict[str, Any] = field(default_factory=lambda: {"name": "fifo"})
    """``{name: fifo}``, or ``{name: asha, grace_period: N, reduction_factor: R, max_t: T}``."""
    cpus_per_trial: float = 1.0
    """CPUs Ray reserves per trial (raise it for ``n_envs`` subprocess environments)."""
    max_concurrent_trials: int | None = None
    """At most this many trials at once; None: as many as the CPUs allow."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as a search file would hold it."""
        data = dataclasses.asdict(self)
        data["seeds"] = list(self.seeds)
        return data


_KEYS = [f.name for f in dataclasses.fields(SearchSpace)]
_SCHEDULER_KEYS = {"fifo": {"name"}, "asha": {"name", "grace_period", "reduction_factor", "max_t"}}


def load_search(path: str | os.PathLike) -> SearchSpace:
    """Read a search file and check its form (not yet its keys against a config).

    Raises:
        ValueError: an unknown key, an empty space, a malformed value or distribution.
    """
    path = Path(path)
    data = parse_yaml(path.read_text())
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a search file is a mapping with a 'space'; got {data!r}")
    return search_from_dict(data, where=str(path))


def search_from_dict(data: Mapping[str, Any], where: str = "search") -> SearchSpace:
    """A checked `SearchSpace` from plain data (a parsed search file)."""
    check_keys(where, data, _KEYS)
    space = data.get("space") or {}
    if not isinstance(space, Mapping) or not space:
        raise ValueError(
            f"{where}: the search space is empty; give 'space' with at least one config key "
            "to vary, e.g. 'dqn.learning_rate: [1e-4, 1e-3]'"
        )
    for key, spec in space.items():
        _check_spec(where, str(key), spec)
    seeds = data.get("seeds") or []
    if isinstance(seeds, int):
        seeds = [seeds]
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"{where}: seeds must be a list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds repeat: {seeds}")
    num_samples = data.get("num_samples", 1)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{where}: num_samples must be an integer >= 1, got {num_samples!r}")
    algorithm = str(data.get("algorithm") or RANDOM_SEARCH)
    if algorithm != RANDOM_SEARCH and len(seeds) > 1:
        raise ValueError(
            f"{where}: algorithm {algorithm!r} proposes one point at a time from the scores it "
            f"has seen, which are only comparable under one seed; give one seed (got {seeds})"
        )
    cpus = data.get("cpus_per_trial", 1.0)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0:
        raise ValueError(f"{where}: cpus_per_trial must be a number > 0, got {cpus!r}")
    limit = data.get("max_concurrent_trials")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{where}: max_concurrent_trials must be null or >= 1, got {limit!r}")
    return SearchSpace(
        space={str(k): v for k, v in space.items()},
        seeds=tuple(seeds),
        num_samples=num_samples,
        algorithm=algorithm,
        scheduler=_check_scheduler(where, data.get("scheduler")),
        cpus_per_trial=float(cpus),
        max_concurrent_trials=limit,
    )


def _check_spec(where: str, key: str, spec: Any) -> None:
    """A key's values: a non-empty list, or one distribution with valid arguments."""
    if key in _RESERVED:
        raise ValueError(f"{where}: {key!r} cannot be searched: {_RESERVED[key]}")
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"{where}: {key!r} has an empty list of values")
        return
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ValueError(
            f"{where}: {key!r} must be a list of values or one of {{{', '.join(DISTRIBUTIONS)}: "
            f"...}}, got {spec!r} (a fixed value belongs in the config or in --set)"
        )
    kind, args = _distribution(spec)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where}: {key!r}: choice needs a non-empty list, got {args!r}")
        return
    if not (isinstance(args, list) and len(args) == 2 and all(_is_number(a) for a in args)):
        raise ValueError(f"{where}: {key!r}: {kind} needs [low, high], got {args!r}")
    low, high = args
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ValueError(f"{where}: {key!r}: randint needs integers, got {args!r}")
    if not (low < high or (kind == "randint" and low == high)):
        raise ValueError(f"{where}: {key!r}: {kind} needs low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{where}: {key!r}: loguniform needs low > 0, got {args!r}")


def _distribution(spec: Mapping[str, Any]) -> tuple[str, Any]:
    """``{loguniform: [1e-5, 1e-2]}`` -> ("loguniform", [1e-5, 1e-2])."""
    return next(iter(spec.items()))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_scheduler(where: str, spec: Any) -> dict[str, Any]:
    if spec is None:
        return {"name": "fifo"}
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or spec.get("name") not in SCHEDULERS:
        raise ValueError(f"{where}: scheduler must have a name in {SCHEDULERS}, got {spec!r}")
    check_keys(f"{where}: scheduler {spec['name']}", spec, _SCHEDULER_KEYS[spec["name"]])
    for key in ("grace_period", "max_t"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}: scheduler {key} must be an integer >= 1 (transitions)")
    factor = spec.get("reduction_factor")
    if factor is not None and (not _is_number(factor) or factor <= 1):
        raise ValueError(f"{where}: scheduler reduction_factor must be > 1, got {factor!r}")
    return dict(spec)


# --------------------------------------------------------------------------- trials' configs
def override(key: str, value: Any) -> str:
    """``key=value`` as `qlr train --set` reads it (YAML flow text; JSON is a subset)."""
    if hasattr(value, "item") and callable(value.item):  # numpy scalars from Tune's samplers
        value = value.item()
    return f"{key}={json.dumps(value, allow_nan=False)}"


def trial_config(
    base: Mapping[str, Any], overrides: Iterable[str], params: Mapping[str, Any]
) -> TrainConfig:
    """The config of one trial: the base config, then `overrides`, then the trial's values."""
    data = copy.deepcopy(dict(base))
    for text in [*overrides, *trial_overrides(params)]:
        apply_override(data, text)
    return config_from_dict(data)


def trial_overrides(params: Mapping[str, Any]) -> list[str]:
    """A trial's values (Tune's ``config``) as ``--set`` strings, the seed last."""
    items = sorted(params.items(), key=lambda item: (item[0] == "seed", item[0]))
    return [override(key, value) for key, value in items]


def check_against_config(
    search: SearchSpace, base: Mapping[str, Any], overrides: Sequence[str], where: str
) -> TrainConfig:
    """Fail now on a key the config does not have or a value it refuses; the base config.

    Each key is tried with a value it can take (the first of a list or choice, the low end of
    a range), so that the error names the search key at fault.
    """
    fixed = {text.partition("=")[0].strip() for text in overrides}
    clash = sorted(fixed & set(search.space))
    if clash:
        raise ValueError(f"{where}: {clash} set both by --set and in the search space")
    config = trial_config(base, overrides, {})
    if config.eval_freq <= 0:
        raise ValueError(
            "a sweep scores trials on their periodic held-out evaluations: the config needs "
            f"eval_freq > 0 (it has {config.eval_freq})"
        )
    for key, spec in search.space.items():
        try:
            trial_config(base, overrides, {key: example_value(spec)})
        except ValueError as err:
            raise ValueError(f"{where}: search key {key!r}: {err}") from None
    return config


def example_value(spec: Any) -> Any:
    """One value a key's spec can produce."""
    if isinstance(spec, list):
        return spec[0]
    _, args = _distribution(spec)
    return args[0]


# --------------------------------------------------------------------------- Ray Tune objects
def tune_param_space(search: SearchSpace, default_seed: int) -> dict[str, Any]:
    """Tune's ``param_space``: flat, keyed by the dotted config keys, plus ``seed``."""
    from ray import tune

    random_search = search.algorithm == RANDOM_SEARCH
    space: dict[str, Any] = {}
    for key, spec in search.space.items():
        if isinstance(spec, list):
            space[key] = tune.grid_search(spec) if random_search else tune.choice(spec)
            continue
        kind, args = _distribution(spec)
        if kind == "choice":
            space[key] = tune.choice(args)
        elif kind == "randint":
            space[key] = tune.randint(args[0], args[1] + 1)  # Tune's upper end is excluded
        else:
            space[key] = getattr(tune, kind)(*args)
    seeds = list(search.seeds) or [default_seed]
    space["seed"] = tune.grid_search(seeds) if len(seeds) > 1 else seeds[0]
    return space


def tune_searcher(search: SearchSpace) -> Any:
    """None for random search (Tune's default generator), else the named Tune searcher."""
    if search.algorithm == RANDOM_SEARCH:
        return None
    from ray.tune.search import create_searcher

    try:
        return create_searcher(search.algorithm)
    except ImportError as err:
        raise ImportError(
            f"search algorithm {search.algorithm!r} needs its own package: {err}"
        ) from err


def tune_scheduler(search: SearchSpace, config: TrainConfig) -> Any:
    """Tune's trial scheduler; ASHA measures time in transitions (``num_timesteps``)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    spec = search.scheduler
    if spec["name"] == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="num_timesteps",
        max_t=spec.get("max_t", config.total_timesteps),
        grace_period=spec.get("grace_period", config.eval_freq),
        reduction_factor=spec.get("reduction_factor", 3),
    )
