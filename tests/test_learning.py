"""Does training learn? A short real DQN run must beat the constant rate it starts from.

Slow (about two minutes on two cores): run with ``pytest -m slow``.
"""

from pathlib import Path

import pytest

from qlr.agents.bench.evaluate import EvalConfig, evaluate_policy
from qlr.agents.learn.config import load_config
from qlr.agents.learn.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_short_training_beats_the_constant_rate_on_held_out_problems(tmp_path):
    config = load_config(
        ROOT / "experiments" / "configs" / "default.yaml",
        [
            "env.problem=[quadratic,logistic,least_squares]",
            "total_timesteps=30000",
            "dqn.learning_starts=1000",
            "eval_freq=0",
            "checkpoint_freq=0",
            "final_eval=null",
            "demonstrations.episodes=40",
            "demonstrations.jobs=1",
        ],
    )
    train(config, tmp_path / "run", progress_bar=False, echo=lambda _: None)
    # Held out: `val` instances (larger than training's, scale 1e-3..1e3), starting rates a
    # user might pick without tuning, for SGD and Adam.
    held_out = EvalConfig(
        distribution="val",
        instances=2,
        families=("quadratic", "logistic", "least_squares"),
        optimizers=("sgd", "adam"),
        initial_lrs=(1e-5, 1e-3),
        oracle_grid=(1e-3,),
        steps=200,
        seed=4_000_003,
    )
    report = evaluate_policy(tmp_path / "run" / "final_policy.qlr", held_out, jobs=1)
    overall = report.summary["overall"]
    assert overall["runs"] == 24
    assert overall["median_log10_vs_start"] < 0  # better than keeping the starting rate
    assert overall["beats_start_rate"] > 0.5
    # The shipped recipe's guard acts on real divergence only (10x), and its held-out rate of
    # avoidable divergences is about 2 % (docs/results/default.md, "Held out"); one of these
    # 24 runs may go the same way.
    assert overall["avoidable_divergences"] <= 1, overall
