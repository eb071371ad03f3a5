"""Errors that are the user's own mistake on the command line.

`UsageError` is a `ValueError`, so library callers keep catching what they caught before; the
``qlr`` command line (`qlr.agents.cli.main`) prints its message on one line and exits with
status 2, the convention for a command used wrongly, without a traceback. Any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A name, path or value given on the command line that cannot be used.

    The message names what was wrong and, where there is a list, the valid choices.
    """
