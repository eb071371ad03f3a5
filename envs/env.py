"""`LearningRateEnv`: an inner gradient-descent run as a Gymnasium environment."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from qlr.control import MAX_BATCH_GROWTH, MAX_LR, MIN_LR, CutKind, LRController, reference_lr
from qlr.envs.distributions import ProblemDistribution, make_distribution
from qlr.envs.optimizers import OPTIMIZERS, make_optimizer
from qlr.envs.problems import Problem
from qlr.features import OBS_HIGH, OBS_LOW
from qlr.rollback import Snapshot

_RESET_OPTIONS = ("lr", "optimizer", "problem", "horizon", "budget_known")
ProblemSpec = str | Sequence[str] | Mapping[str, float] | ProblemDistribution | Problem


class LearningRateEnv(gym.Env):
    """Control the learning rate of an inner gradient-descent run.

    ## Description
    Each episode draws an optimisation problem (a quadratic, Rosenbrock, a regression, a small
    network, ...), an inner optimizer (SGD, momentum, Adam, ...) and an initial learning rate.
    Every step of the environment is one decision: the agent multiplies the learning rate by one
    of a few factors, then the inner optimizer runs `steps_per_decision` steps at that rate.
    The observation is computed by `qlr.FeatureTracker` from the losses and gradients of those
    steps, exactly as `qlr.QLRScheduler` computes it in deployment, and the learning-rate rules
    (bounds, guard) are those of `qlr.LRController`.

    ## Action Space
    `Discrete(n)`: action `i` multiplies the learning rate by `action_factors[i]`. The default
    three factors are (0.5, 1, 2): lower, hold, raise. `action_factors=5` or `7` select wider
    sets (see `qlr.ACTION_SETS`); ``qlr/LearningRate-v2`` has the five of 5, from x0.5 to x2 in
    steps of sqrt(2). The rate is then clamped to `lr_bounds`.

    With `batch_factors` (the noise-level mode, for minibatch problems only), there are
    ``len(action_factors) * len(batch_factors)`` actions: action ``i * len(batch_factors) + j``
    multiplies the rate by ``action_factors[i]`` and the batch size by ``batch_factors[j]``
    (rounded, between 1 and ``min(n, max_batch_growth * starting batch)``). Decisions are then
    paced in examples: the n-th comes at the first step by which ``n * steps_per_decision * b0``
    examples are spent (starting batch `b0`; at batch `b`, about ``steps_per_decision * b0 / b``
    steps per decision, see `qlr.LRController`), and the episode's budget is counted in
    examples: ``horizon * steps_per_decision * b0`` (it ends when they are spent, however the
    batch has grown). A larger batch costs its examples: a policy cannot win by buying batches.

    ## Observation Space
    `Box(-1, 1, (n,), float32)`, every feature scale-free and bounded; `features` selects which
    (default: the first eleven for rate-only control, the first thirteen with `batch_factors`;
    ``qlr/LearningRate-v2``: the fourteen the shipped policy reads, 0-5, 9-10 and 13-18):

    | index | feature            | meaning                                            | min | max |
    |-------|--------------------|----------------------------------------------------|-----|-----|
    | 0     | loss_change_step   | relative loss change over the last inner step      | -1  | 1   |
    | 1     | loss_change_block  | relative loss change since the previous decision   | -1  | 1   |
    | 2     | loss_above_best    | how far the loss sits above the best loss so far   | 0   | 1   |
    | 3     | loss_rank          | +1 below the last 5 decision losses, -1 above them | -1  | 1   |
    | 4     | loss_rise_fraction | fraction of the block's steps where the loss rose  | 0   | 1   |
    | 5     | loss_noise         | spread of step-to-step loss changes, last 10 steps | 0   | 1   |
    | 6     | grad_cosine        | mean cosine of successive gradients                | -1  | 1   |
    | 7     | grad_projection    | tanh of mean g_t.g_(t-1) / abs(g_(t-1))^2          | -1  | 1   |
    | 8     | grad_norm_change   | relative change of the gradient norm since the     | -1  | 1   |
    |       |                    | previous decision                                  |     |     |
    | 9     | nonfinite          | 1 if a loss or gradient in the block was not finite| 0   | 1   |
    | 10    | lr_drift           | tanh(log10(rate / starting rate) / 3)              | -1  | 1   |
    | 11    | grad_noise         | disagreement of successive minibatch gradients     | 0   | 1   |
    |       |                    | (0 equal, 0.5 orthogonal: pure noise, 1 opposite)  |     |     |
    | 12    | batch_growth       | tanh(log2(batch / starting batch) / 3)             | -1  | 1   |
    | 13    | update_slope       | median slope ratio r along the update taken, / 2   | -1  | 1   |
    |       |                    | (0.5: step too short, 0: just right, < -0.5: the   |     |     |
    |       |                    | loss rose along it; see `qlr.features`)            |     |     |
    | 14    | update_slope_spread| standard deviation of those samples of r, / 2      | 0   | 1   |
    | 15    | armijo_ratio       | median loss decrease over -abs(g . u), / 2         | -1  | 1   |
    | 16    | update_size        | tanh((log10(abs(u) / abs(theta)) + 3) / 2)         | -1  | 1   |
    | 17    | progress           | fraction of the episode's budget spent (0 unknown) | 0   | 1   |
    | 18    | budget_known       | 1 when the controller was told the budget          | 0   | 1   |
    | 19    | lr_ceiling         | 1 - tanh(log10(ceiling / rate)) while the rollback | 0   | 1   |
    |       |                    | guard keeps a ceiling after a failure; 0 without   |     |     |

    Relative changes are (new - old) / max(abs(new), abs(old)), log-spread so that small
    changes stay visible (see `qlr.features`).

    ## Rewards
    `log(L_before / L_after)` for the decision, clipped to `[-reward_clip, reward_clip]`, where
    `L` is the full objective (for minibatch problems too, so the reward is not minibatch noise).
    Without clipping the return telescopes to `log(L_0 / L_T)`. Losses are floored at
    `1e-12 * L_0` so that an exact zero gives a finite reward. A divergence gives
    `-divergence_penalty` and ends the episode; with `rollback`, it gives `-divergence_penalty`
    and the block is undone instead (see Episode End).

    ## Starting State
    `reset` draws a problem instance from the problem distribution, an optimizer from
    `optimizer`, and an initial learning rate log-uniformly from `initial_lr_range`, all from
    `np_random`. It then runs one block of `steps_per_decision` inner steps at that rate (the
    scheduler likewise acts only after its first block) and returns that block's observation.
    If the first block already diverges, the same instance is restarted at a tenth of the rate
    (at most 10 times), since a user would not keep a rate that fails at once.

    ## Episode End
    - Terminated: the loss (or a gradient, seen one inner step later) became NaN or infinite,
      or the loss rose above `divergence_factor` times its initial value. The reward is
      `-divergence_penalty`.
      With `rollback` (as `QLRScheduler` runs by default), such a block does not end the
      episode: the parameters and optimizer state go back to where the block started, the rate
      is cut by the guard's non-finite factor and kept below half the rate that failed (the
      controller's ceiling, relaxing 5 % a decision), and the episode goes on
      (``info["rolled_back"]``).
    - Truncated: the episode's `horizon` decisions were taken (with `batch_factors`: the
      example budget      is spent).

    ## Arguments
    - `problem`: a distribution name (``"train"``, ``"test"``, ...), a family name, a list of
      family names, a ``{family: weight}`` dict, a `ProblemDistribution`, or one `Problem`
      instance, whose parameters every reset restores to their values at construction.
      ``reset(options={"problem": instance})`` runs one episode on a given instance.
    - `optimizer`: one name from `OPTIMIZERS` or a sequence of names drawn uniformly per episode.
    - `optimizer_kwargs`: ``{optimizer name: {keyword: value}}`` passed to the optimizer.
    - `steps_per_decision`: inner steps between decisions (k).
    - `action_factors`: 3, 5, 7 or a sequence of positive factors.
    - `lr_bounds`: `(min_lr, max_lr)` the rate is clamped to.
    - `initial_lr_range`: `(low, high)` of the log-uniform initial rate.
    - `horizon`: decisions per episode, or a pair ``(low, high)`` to draw each episode's
      length log-uniformly between them: a controller trained on runs of one length learns
      what pays within that length (short-horizon bias), one trained over two orders of
      magnitude of lengths cannot.
    - `budget_known`: the probability that an episode tells the controller its budget
      (``(horizon + 1) * steps_per_decision`` steps: the reset's block and one block per
      decision), which it then reads as the ``progress`` and
      ``budget_known`` features; otherwise both read 0. 0 (never) by default, 1 always.
    - `reward_clip`, `divergence_penalty`, `divergence_factor`: see Rewards and Episode End.
    - `rollback`: undo a diverged block instead of ending the episode (see Episode End).
    - `features`: names of the observed features (see `qlr.FEATURE_NAMES`); default as in
      Observation Space.
    - `spike_factor`, `spike_cut`: the per-step spike guard of `qlr.LRController` (off when
      `spike_factor` is None). A trained policy file records them and the scheduler applies
      the same guard, with the same timing: a step's statistics are read on the next inner
      step, so a cut reaches the rate one step late (at once on a block's last step), as the
      scheduler reads them so as not to stall an accelerator.
    - `max_lr_growth`: when set, the rate is never raised above this multiple of the episode's
      starting rate (a bound relative to the start, on top of `lr_bounds`); recorded in a
      trained policy file like the guard.
    - `batch_factors`: batch-size factors of the noise-level mode (None: rate-only control).
    - `max_batch_growth`: the batch size never exceeds this multiple of its starting value.

    ## Version History
    The registered ids (``import qlr.envs``) fix the arguments; keyword arguments to
    ``gymnasium.make`` override them.

    - v2 (``qlr/LearningRate-v2``): the shipped recipe's environment, the env section of
      ``experiments/configs/default.yaml`` that the default policy (``qlr.load_policy("default")``)
      was trained on (`qlr.envs.RECIPE_ENV_DEFAULTS`): v1 with ``rollback=True``.
    - v1 (``qlr/LearningRate-v1``): the second design's recipe
      (`qlr.envs.RECIPE_V1_ENV_DEFAULTS`): the fourteen features its default policy reads
      (feature version 5), five action factors from x0.5 to x2, the spike guard (a cut to x0.1
      when the loss passes 10x the last block's mean while rising), the optimizers SGD,
      momentum, Adam, AdamW and AdaGrad, episodes of 10 to 1,000 decisions drawn log-uniformly,
      and the budget told in half of them.
    - v0 (``qlr/LearningRate-v0``): the first design's defaults, which are `LearningRateEnv`'s
      own: the first eleven features, three action factors (0.5, 1, 2), no guard, SGD,
      momentum and Adam, 60 decisions per episode. Its default observation gained `lr_drift`
      (ten features to eleven) under the same id; everything added since is an argument that
      is off by default (`features`, the spike guard, `max_lr_growth`, the noise-level mode,
      `budget_known`, a `horizon` range), so v0 with no arguments stays the first design.
      (The guard, when turned on, came to act one inner step late, at once on a block's last
      step, as the scheduler does.) A change of dynamics, reward or defaults now takes a new
      version.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        problem: str
        | Sequence[str]
        | Mapping[str, float]
        | ProblemDistribution
        | Problem = "train",
        optimizer: str | Sequence[str] = ("sgd", "momentum", "adam"),
        optimizer_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        steps_per_decision: int = 5,
        action_factors: int | Sequence[float] = 3,
        lr_bounds: tuple[float, float] = (MIN_LR, MAX_LR),
        initial_lr_range: tuple[float, float] = (1e-5, 1.0),
        horizon: int | Sequence[int] = 60,
        budget_known: float = 0.0,
        reward_clip: float = 1.0,
        divergence_penalty: float = 5.0,
        divergence_factor: float = 1e3,
        features: Sequence[str] | None = None,
        spike_factor: float | None = None,
        spike_cut: float = 0.5,
        max_lr_growth: float | None = None,
        batch_factors: Sequence[float] | None = None,
        max_batch_growth: float = MAX_BATCH_GROWTH,
        rollback: bool = False,
    ) -> None:
        super().__init__()
        self.distribution: ProblemDistribution | None = None
        self._fixed: tuple[Problem, list, int | None] | None = None
        if isinstance(problem, Problem):
            self._fixed = _snapshot(problem)
        else:
            self.distribution = make_distribution(problem)
        self.optimizers = _optimizer_names(optimizer)
        self.optimizer_kwargs = _optimizer_kwargs(optimizer_kwargs, self.optimizers)
        self.controller = LRController(
            action_factors=action_factors,
            decision_interval=steps_per_decision,
            min_lr=_pair(lr_bounds, "lr_bounds")[0],
            max_lr=_pair(lr_bounds, "lr_bounds")[1],
            features=features,
            spike_factor=spike_factor,
            spike_cut=spike_cut,
            max_lr_growth=max_lr_growth,
            batch_factors=batch_factors,
            batch_size=1 if batch_factors is not None else None,  # the real one comes per run
        )
        _check_positive("max_batch_growth", max_batch_growth)
        if max_batch_growth < 1:
            raise ValueError(f"max_batch_growth must be >= 1, got {max_batch_growth}")
        self.max_batch_growth = float(max_batch_growth)
        self.batch_factors = self.controller.batch_factors
        low, high = _pair(initial_lr_range, "initial_lr_range")
        if not self.controller.min_lr <= low <= high <= self.controller.max_lr:
            raise ValueError(
                f"initial_lr_range={initial_lr_range} must lie inside lr_bounds={lr_bounds}"
            )
        self.initial_lr_range = (low, high)
        self.horizon_range = _horizon_range(horizon)
        if not (isinstance(budget_known, (int, float)) and 0.0 <= budget_known <= 1.0):
            raise ValueError(f"budget_known must be a probability in [0, 1], got {budget_known!r}")
        self.budget_known = float(budget_known)
        _check_positive("reward_clip", reward_clip)
        _check_positive("divergence_penalty", divergence_penalty)
        _check_positive("divergence_factor", divergence_factor)
        if divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor}")
        self.steps_per_decision = int(steps_per_decision)
        self.horizon = self.horizon_range[0]  # this episode's, drawn at reset
        self.reward_clip = float(reward_clip)
        self.divergence_penalty = float(divergence_penalty)
        self.divergence_factor = float(divergence_factor)
        self.rollback = bool(rollback)
        self.rollbacks = 0  # blocks undone this episode (with `rollback`)
        self._snapshot: Snapshot | None = None

        self.action_space = spaces.Discrete(self.controller.n_actions)
        self.observation_space = spaces.Box(
            low=OBS_LOW, high=OBS_HIGH, shape=(self.controller.obs_dim,), dtype=np.float32
        )
        self.feature_names = self.controller.features
        self.problem: Problem | None = None
        self.optimizer = None
        self.example_budget: int | None = None  # training examples an episode may spend
        self.train_examples = 0  # training examples spent so far this episode

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(_RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: {list(_RESET_OPTIONS)}")
        rng = self.np_random
        problem_seed = int(rng.integers(2**63 - 1))
        name = options.get("optimizer") or self.optimizers[int(rng.integers(len(self.optimizers)))]
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}")
        low, high = self.initial_lr_range
        lr = float(options.get("lr") or math.exp(rng.uniform(math.log(low), math.log(high))))
        lr = self.controller.clamp(lr)
        self._draw_horizon(rng, options)

        fixed = self._fixed
        if options.get("problem") is not None:
            if not isinstance(options["problem"], Problem):
                raise ValueError("reset option 'problem' must be a qlr.envs.Problem instance")
            fixed = _snapshot(options["problem"])
        for _ in range(10):
            if fixed is not None:
                problem = _restore(*fixed)
            else:
                problem = self.distribution.sample(np.random.default_rng(problem_seed))
            self._start_run(problem, name, lr)
            if not self._run_block():
                break
            lr = self.controller.clamp(lr / 10)
        self._reward_loss = self._objective()
        return self.controller.observe(reference_lr(self.optimizer)), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.optimizer is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        batch_size = self.controller.apply_action(self.optimizer, int(action))
        if batch_size is not None:
            self.problem.set_batch_size(batch_size)
        if self._snapshot is not None:
            self._snapshot.save()  # the block starts from a state that did not diverge
            self._snapshot.confirm()
        diverged = self._run_block()
        self.decisions += 1
        if not diverged:
            new_loss = self._objective()
        if self.batch_factors is not None and not diverged and not self._within_limit(new_loss):
            diverged = True  # this loop has no look-ahead minibatch loss: the objective tells
        rolled_back = diverged and self._snapshot is not None
        if rolled_back:
            self._roll_back()
        elif self._snapshot is not None:
            self.controller.relax_ceiling()  # one clean block further from a failure
        obs = self.controller.observe(reference_lr(self.optimizer))
        if rolled_back:
            reward = -self.divergence_penalty  # the block is undone, the episode goes on
            diverged = False
        elif diverged:
            reward = -self.divergence_penalty
            self._reward_loss = math.inf
        else:
            floor = 1e-12 * self.initial_loss
            log_ratio = math.log(max(self._reward_loss, floor) / max(new_loss, floor))
            reward = min(self.reward_clip, max(-self.reward_clip, log_ratio))
            self._reward_loss = new_loss
        if self.example_budget is not None:
            truncated = not diverged and self._budget_spent()
        else:
            truncated = not diverged and self.decisions >= self.horizon
        info = self._info()
        info["diverged"] = diverged
        info["rolled_back"] = rolled_back
        return obs, float(reward), diverged, truncated, info

    def _roll_back(self) -> None:
        """The scheduler's rollback guard: go back to the block's starting state, remember the
        rate that failed (the controller's ceiling) and cut the rate."""
        assert self._snapshot is not None
        self.controller.remember_failure(reference_lr(self.optimizer))
        self._snapshot.restore()
        self.controller.scale(self.optimizer, self.controller.nonfinite_cut)
        self.controller.tracker.restart_samples()
        self.rollbacks += 1
        if self.batch_factors is None:  # the next step's gradient, from the restored state
            self._loss = self._train_loss_and_grad()
        else:
            self._loss = self.problem.loss()

    def _draw_horizon(self, rng: np.random.Generator, options: dict[str, Any]) -> None:
        """This episode's length and whether the controller knows it (drawn only when varied,
        so a fixed horizon leaves the episode's other draws as they were)."""
        low, high = self.horizon_range
        if options.get("horizon") is not None:
            self.horizon = _horizon_range(options["horizon"])[0]
        elif low != high:
            self.horizon = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
        else:
            self.horizon = low
        known = options.get("budget_known")
        if known is None:
            known = self.budget_known >= 1 or (
                self.budget_known > 0 and rng.random() < self.budget_known
            )
        # The reset's block plus one block per decision: the episode's steps at the start batch.
        total = (self.horizon + 1) * self.steps_per_decision
        self.controller.total_steps = total if known else None

    # ------------------------------------------------------------------ inner run
    def _start_run(self, problem: Problem, optimizer: str, lr: float) -> None:
        self.problem = problem
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(
            optimizer, problem.params, lr, **self.optimizer_kwargs.get(optimizer, {})
        )
        self.controller.reset()
        self._snapshot = Snapshot(self.optimizer) if self.rollback else None
        self.rollbacks = 0
        self.decisions = 0
        self.train_examples = 0
        if self.batch_factors is not None:
            self._start_batches(problem)
            self._loss = self.initial_loss = self.problem.loss()
            return
        self._loss = self._train_loss_and_grad()
        self.initial_loss = self._objective() if problem.stochastic else self._loss

    def _within_limit(self, loss: float) -> bool:
        return math.isfinite(loss) and loss <= self.divergence_factor * abs(self.initial_loss)

    def _run_block(self) -> bool:
        """Run k inner steps at the current rate; return True if the run diverged.

        The controller sees the loss and gradient of each step just taken, as in deployment.
        Rate-only control computes each gradient right after the previous step (one ahead). In
        the noise-level mode (`batch_factors`) a batch-size action must reach the very next
        batch, as it does in a training loop fed by `qlr.DynamicBatchSampler`, so each gradient
        is taken on a batch of the current size when its step needs it.
        """
        fresh = self.batch_factors is not None
        params = self.problem.params
        for _ in range(self.controller.tracker.interval):
            if self._budget_spent():
                break  # the budget ran out inside the block: decide on what was seen
            if fresh:
                self._loss = self._train_loss_and_grad()
                if not self._within_limit(self._loss):
                    return True
            self.optimizer.step()
            cut = self.controller.record_step(self._loss, [p.grad for p in params], params)
            if CutKind.NONFINITE in self.controller.last_cuts:
                return True
            if cut != 1.0:  # the spike guard, exactly as the scheduler applies it
                self.controller.scale(self.optimizer, cut)
            if not fresh:
                self._loss = self._train_loss_and_grad()
                if not self._within_limit(self._loss):
                    return True
        return False

    def _start_batches(self, problem: Problem) -> None:
        """Noise-level mode: bound the batch size and set the run's example budget."""
        if not problem.stochastic or not hasattr(problem, "set_batch_size"):
            raise ValueError(
                f"batch_factors needs minibatch problems, but {problem.name!r} is full-batch: "
                "use a distribution of minibatch data problems, e.g. 'train_stochastic'"
            )
        start = int(problem.batch_size)
        limit = max(start, min(problem.n, int(self.max_batch_growth * start)))
        self.controller.set_batch_bounds(start, max_batch_size=limit)
        self.example_budget = self.horizon * self.steps_per_decision * start

    def _budget_spent(self) -> bool:
        """True when the next batch would take the run past its example budget."""
        if self.example_budget is None:
            return False
        return self.train_examples + self.problem.batch_size > self.example_budget

    def _train_loss_and_grad(self) -> float:
        """One gradient evaluation of the inner run, its examples counted against the budget."""
        before = self.problem.examples_seen
        loss = self.problem.loss_and_grad()
        self.train_examples += self.problem.examples_seen - before
        return loss

    def _objective(self) -> float:
        """The loss the reward is computed on: the full objective, never one minibatch."""
        return self.problem.loss() if self.problem.stochastic else self._loss

    def _info(self) -> dict[str, Any]:
        problem = self.problem
        return {
            "lr": reference_lr(self.optimizer),
            "loss": self._loss,
            "initial_loss": self.initial_loss,
            "objective": self._reward_loss,  # full objective at the last decision
            "grad_evals": problem.grad_evals,
            "func_evals": problem.func_evals,
            "examples_seen": problem.examples_seen,
            "train_examples": self.train_examples,  # examples of the gradient evaluations
            "batch_size": getattr(problem, "batch_size", None),
            "batch_growth": (  # batch size over its starting value, in the noise-level mode
                None
                if self.batch_factors is None
                else self.controller.batch_size / self.controller.start_batch_size
            ),
            "problem": problem.name,
            "optimizer": self.optimizer_name,
            "decisions": self.decisions,
            "horizon": self.horizon,
            "total_steps": self.controller.total_steps,  # None: the controller was not told
        }


def _snapshot(problem: Problem) -> tuple[Problem, list, int | None]:
    """A fixed instance with its starting parameters and batch size."""
    params = [p.detach().clone() for p in problem.params]
    return problem, params, getattr(problem, "batch_size", None)


def _restore(problem: Problem, params: list, batch_size: int | None) -> Problem:
    """Put a fixed instance back at its starting point, counters and batch size included."""
    for p, start in zip(problem.params, params, strict=True):
        p.data.copy_(start)
        p.grad = None
    problem.grad_evals = problem.func_evals = problem.examples_seen = 0
    if batch_size is not None and problem.batch_size != batch_size:
        problem.set_batch_size(batch_size)
    return problem


def _horizon_range(horizon: int | Sequence[int]) -> tuple[int, int]:
    """`horizon` as (low, high): an int is both; a pair must be positive integers, low <= high."""
    pair = (horizon, horizon) if not isinstance(horizon, Sequence) else tuple(horizon)
    ok = len(pair) == 2 and all(
        isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in pair
    )
    if not ok or pair[0] > pair[1]:
        raise ValueError(
            f"horizon must be a positive integer or a pair (low, high) of them, got {horizon!r}"
        )
    return int(pair[0]), int(pair[1])


def _optimizer_names(optimizer: str | Sequence[str]) -> tuple[str, ...]:
    names = (optimizer,) if isinstance(optimizer, str) else tuple(optimizer)
    bad = [n for n in names if n not in OPTIMIZERS]
    if not names or bad:
        raise ValueError(f"optimizer {bad or names!r} not valid; choose from {list(OPTIMIZERS)}")
    return names


def _optimizer_kwargs(kwargs: Mapping | None, names: tuple[str, ...]) -> dict[str, dict]:
    kwargs = dict(kwargs or {})
    bad = [k for k in kwargs if k not in names]
    if bad:
        raise ValueError(
            f"optimizer_kwargs has keys {bad} that are not optimizers in use {list(names)}; "
            "it maps an optimizer name to its keyword arguments"
        )
    return {k: dict(v) for k, v in kwargs.items()}


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (0 < low <= high < math.inf):
        raise ValueError(f"{name} must satisfy 0 < low <= high < inf, got {value!r}")
    return low, high


def _check_positive(name: str, value: float, integer: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and value > 0
    if integer:
        ok = ok and int(value) == value
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
