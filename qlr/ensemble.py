"""Combine trained policies into one file: an ensemble, deferring to the slope rule where unsure.

`combine` stacks several Q-networks of the same shape into one network whose output holds each
member's q-values in turn (the first layer's rows side by side, the later layers block-diagonal),
so the result is an ordinary policy file, loaded without unpickling like any other. With a
`Deferral` it acts as the slope rule except where every member picks the same other action and
its mean advantage over the rule's action clears the margin (see `qlr.deferral`).

Example:
    >>> members = [load_policy(p) for p in ("seed0.qlr", "seed1.qlr", "seed2.qlr")]
    >>> save_policy(combine(members, Deferral(margin=0.1)), "ensemble.qlr")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from qlr.deferral import Deferral
from qlr.policy import Policy

# What every member must share, or their q-values mean different things.
_SHARED = (
    "action_factors",
    "decision_interval",
    "activation",
    "feature_version",
    "feature_names",
    "obs_mean",
    "obs_std",
    "spike_factor",
    "spike_cut",
    "batch_factors",
    "max_batch_growth",
    "max_lr",
    "max_lr_growth",
)


def combine(
    policies: Sequence[Policy], defer: Deferral | None = None, spike_guard: bool = True
) -> Policy:
    """One policy made of `policies` (one or more single-network policies of the same shape).

    With ``spike_guard=False`` the combined policy runs without the spike guard its members
    were trained with (``metadata.spike_factor`` None): measured on the third design's
    selection families, the guard's x0.1 cuts cost more than they saved once the scheduler's
    rollback guard undoes real divergences (experiments/results/ablation/).

    The combined file keeps the first member's metadata (its training config included, so a
    held-out report knows what the ensemble touched) and records every member's config hash
    and seed under ``extra["members"]``.

    Raises:
        ValueError: no policies, a member that is itself an ensemble, or members whose
            features, factors, guards or network shapes differ.
    """
    if not policies:
        raise ValueError("combine needs at least one policy")
    first = policies[0].metadata
    for i, policy in enumerate(policies):
        meta = policy.metadata
        if policy.heads != 1:
            raise ValueError(f"member {i} is already an ensemble of {policy.heads} heads")
        differ = [key for key in _SHARED if getattr(meta, key) != getattr(first, key)]
        if meta.hidden_sizes != first.hidden_sizes:
            differ.append("hidden_sizes")
        if differ:
            raise ValueError(f"member {i} differs from member 0 in {', '.join(differ)}")
    layers = []
    for depth in range(len(policies[0].layers)):
        weights = [policy.layers[depth][0] for policy in policies]
        biases = [policy.layers[depth][1] for policy in policies]
        # Every member reads the same observation; after that, each only its own units.
        weight = torch.cat(weights) if depth == 0 else torch.block_diag(*weights)
        layers.append((weight, torch.cat(biases)))
    members = [
        {
            "config_hash": policy.metadata.extra.get("config_hash"),
            "seed": (policy.metadata.extra.get("train_config") or {}).get("seed"),
        }
        for policy in policies
    ]
    metadata = replace(
        first,
        hidden_sizes=tuple(h * len(policies) for h in first.hidden_sizes),
        heads=len(policies),
        defer=defer,
        spike_factor=first.spike_factor if spike_guard else None,
        extra={**first.extra, "members": members},
    )
    return Policy(layers, metadata)
