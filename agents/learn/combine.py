"""``qlr combine``: several policy files as one, an ensemble that may defer to the slope rule.

    qlr combine ensemble.qlr seed0.qlr seed1.qlr --defer-margin 0
    qlr combine residual.qlr seed0.qlr --defer-margin 0.05 --no-spike-guard

See `qlr.ensemble.combine` and `qlr.deferral.Deferral`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qlr.agents.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the policy file to write")
    parser.add_argument("members", type=Path, nargs="+", help="the policy files to combine")
    parser.add_argument(
        "--defer-margin",
        type=float,
        default=None,
        metavar="M",
        help="act as the slope rule unless every member picks the same other action and its "
        "q-value advantage over the rule's action exceeds M (default: no rule, the members' "
        "mean q-values decide)",
    )
    parser.add_argument(
        "--no-spike-guard",
        action="store_true",
        help="run without the spike guard the members were trained with (the rollback guard "
        "still undoes non-finite steps and real divergences)",
    )


def run(args: argparse.Namespace) -> int:
    from qlr.deferral import Deferral
    from qlr.ensemble import combine
    from qlr.policy import PolicyFileError, load_policy, save_policy

    try:
        members = [load_policy(path) for path in args.members]
        defer = None if args.defer_margin is None else Deferral(args.defer_margin)
        policy = combine(members, defer, spike_guard=not args.no_spike_guard)
    except (PolicyFileError, ValueError) as err:
        raise UsageError(str(err)) from None
    path = save_policy(policy, args.out)
    print(f"wrote {path}: {load_policy(path)!r}")
    return 0
