"""RLlib's PPO (new API stack, action-masking module) trains on the tiny cascade with one remote env
runner, from ``examples/rllib_ppo.py`` (issues 15 and 19).

Runs in its own venv with ``ray[rllib]`` installed (``make test-clients``); skipped elsewhere."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.clients

pytest.importorskip("ray.rllib")

from test_examples import load  # noqa: E402


def test_rllib_ppo_trains_with_one_remote_env_runner() -> None:
    result = load("rllib_ppo").main([
        "--backbone", "tiny-cascade", "--iterations", "2", "--num-env-runners", "1", "--num-cpus", "2",
        "--train-batch-size", "400", "--minibatch-size", "100", "--num-epochs", "2",
    ])
    assert result["remote_env_runners"] == 1
    returns = result["episode_return_mean"]
    assert len(returns) == 2 and all(math.isfinite(r) for r in returns)
    assert all(-1.0 < r <= 1.0 for r in returns)  # 1[correct] − λ·MACs fraction, λ = 0.05
    assert result["greedy_invalid_actions"] == 0
