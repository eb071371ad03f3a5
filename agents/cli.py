"""The ``qlr`` command line: ``qlr train | evaluate | compare | sweep | export | demo``.

Each subcommand lives in its own module with two functions, ``configure(parser)`` and
``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so that
``qlr --help`` answers at once.

A user's mistake (an unknown suite or config name, a missing file, a file of the wrong kind)
raises `qlr.agents.errors.UsageError`; `main` prints its message as one line on stderr and exits
with status 2, as argparse does for a bad option. Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qlr.agents.errors import UsageError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("qlr.agents.learn.train", "train a DQN learning-rate controller from a config"),
    "evaluate": (
        "qlr.agents.bench.evaluate",
        "score a policy on held-out problems",
    ),
    "compare": ("qlr.agents.bench.compare", "run a benchmark suite of methods x problems x seeds"),
    "sweep": ("qlr.agents.learn.sweep", "many `qlr train` trials with Ray Tune (needs qlr[ray])"),
    "export": ("qlr.agents.learn.export", "write a run's Q-network to a deployable policy file"),
    "demo": ("qlr.agents.demo", "a short demonstration on bundled data"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qlr", description="Learning-rate controllers learned with deep Q-learning."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # a subcommand whose module is not part of this version
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``qlr`` command line; returns the exit status.

    Raises:
        SystemExit: status 2 on a usage error, after one line on stderr (argparse's own errors
            exit the same way).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        # One line, whatever the message holds, so that scripts can show or parse it.
        message = " ".join(str(err).split())
        print(f"qlr {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
