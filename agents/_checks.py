"""The unknown-key check of every file ``qlr`` reads: configs, suites and search spaces.

Both subpackages use it (``learn`` for training configs and search files, ``bench`` for
suites), so a misspelt key reads the same wherever it is, and it lives beside them rather than
in either.
"""

from __future__ import annotations

from collections.abc import Iterable


def check_keys(where: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Fail on any key of `given` that is not in `valid`, naming it and listing the valid ones.

    Args:
        where: what holds the keys, as the user knows it (a file, ``dqn``, ``scheduler asha``).
        given: the keys that were given (a mapping's keys).
        valid: every key allowed there.

    Raises:
        ValueError: ``"{where}: unknown keys [...]; valid: [...]"``, both lists sorted.

    Example:
        >>> check_keys("env", {"horizn": 3}, ["horizon", "problem"])
        Traceback (most recent call last):
        ValueError: env: unknown keys ['horizn']; valid: ['horizon', 'problem']
    """
    allowed = {str(k) for k in valid}
    unknown = sorted({str(k) for k in given} - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid: {sorted(allowed)}")
