"""What a benchmark run may spend: `Budget`, and the examples one evaluation of a problem costs.

Every method is run under a `Budget` (`qlr.agents.bench.methods`), every suite states one
(`qlr.agents.bench.suites`) and `qlr evaluate` builds one per run. This module imports nothing
heavy, so that the suites and the command line can name budgets without loading `qlr.envs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qlr.envs.problems import Problem

__all__ = ["NO_EXAMPLES", "Budget", "examples_per_eval"]

NO_EXAMPLES = "a budget of examples alone cannot limit a problem without data (analytic)"


@dataclass(frozen=True)
class Budget:
    """Limits a run must stay within; ``None`` means no limit of that kind.

    Attributes:
        grad_evals: gradient evaluations.
        total_evals: gradient plus function evaluations (what a line search pays for trials).
        examples: data examples processed (gradient and function evaluations both count).
    """

    grad_evals: int | None = None
    total_evals: int | None = None
    examples: int | None = None

    def __post_init__(self) -> None:
        if all(v is None for v in (self.grad_evals, self.total_evals, self.examples)):
            raise ValueError("a Budget needs at least one of grad_evals, total_evals, examples")
        for name in ("grad_evals", "total_evals", "examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Budget.{name} must be positive, got {value}")

    @property
    def examples_only(self) -> bool:
        """True when only examples are limited (the run may take many small steps)."""
        return self.examples is not None and self.grad_evals is None and self.total_evals is None

    def steps(self, examples_per_step: int) -> int:
        """Optimizer steps a one-gradient-per-step method can afford."""
        limits = [v for v in (self.grad_evals, self.total_evals) if v is not None]
        if self.examples is not None and examples_per_step > 0:
            limits.append(self.examples // examples_per_step)
        if not limits:
            raise ValueError(NO_EXAMPLES)
        return min(limits)


def examples_per_eval(problem: Problem) -> tuple[int, int]:
    """Examples one gradient and one function evaluation process (0 for analytic problems)."""
    n = int(getattr(problem, "n", 0) or 0)
    batch = getattr(problem, "batch_size", None)
    return (int(batch) if batch else n), n
