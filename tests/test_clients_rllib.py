"""RLlib's PPO (new API stack, action-masking module) from ``examples/rllib_ppo.py`` (issues 15 and 19):
one training iteration with one remote env runner on the tiny cascade writes a checkpoint and
TensorBoard events, and routing-env's own ``evaluate`` scores that checkpoint.

Runs in its own venv with ``ray[rllib]`` installed (``make test-clients``); skipped elsewhere."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.clients

pytest.importorskip("ray.rllib")

from test_examples import EXAMPLES, load  # noqa: E402

from helpers import readme_block  # noqa: E402

ENV = "routing_env/Cascade-v0"
OPTIONS = {"backbone": "tiny-cascade", "lam": 0.05}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rllib") / "run"
    result = load("rllib_ppo").main([
        "--backbone", "tiny-cascade", "--lam", "0.05", "--iterations", "1", "--num-env-runners", "1",
        "--num-cpus", "2", "--train-batch-size", "400", "--minibatch-size", "100", "--num-epochs", "2",
        "--sort-probs", "--out", str(out),
    ])
    return out, result


def test_one_iteration_with_one_remote_env_runner_writes_a_checkpoint_and_tensorboard_events(run) -> None:  # noqa: ANN001
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, result = run
    assert result["remote_env_runners"] == 1
    [row] = result["history"]
    assert row["env_steps"] >= 400
    assert math.isfinite(row["episode_return_mean"]) and -1.0 < row["episode_return_mean"] <= 1.0  # 1[correct] − λ·MACs
    assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 < row["macs_fraction"] <= 1.0
    assert math.isfinite(row["total_loss"])
    module = out / "checkpoint" / "learner_group" / "learner" / "rl_module" / "default_policy"
    assert Path(result["checkpoint"]) == (out / "checkpoint").resolve() and (module / "module_state.pkl").is_file()
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert events
    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    assert {"charts/episode_return_mean", "charts/episode_len_mean", "charts/accuracy", "charts/macs_fraction",
            "losses/total_loss", "losses/policy_loss", "losses/vf_loss"} <= set(tags)
    assert json.loads((out / "agent.json").read_text()) == {"agent": "rllib_ppo:RLlibAgent", "seed": 0, "options": {"sort_probs": True}}
    assert json.loads((out / "config.json").read_text())["env_kwargs"] == {"split": "val", **OPTIONS}


def test_routing_env_evaluate_scores_the_checkpoint(run) -> None:  # noqa: ANN001
    out, _ = run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "routing_env", "evaluate", "--backbone", "tiny-cascade", "--lam", "0.05",
           "--agent", "rllib_ppo:RLlibAgent", "--agent-kwargs", f"checkpoint={out}", "sort_probs=true", "--split", "test", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    from routing_env.experiments import evaluation_env

    assert result["policy"] == "rllib-ppo" and result["split"] == "test"
    assert result["n"] == evaluation_env(ENV, OPTIONS, "test").unwrapped.num_instances
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 < result["macs_fraction"] <= 1.0
    assert result["policy_macs_per_decision"] == 72 * 64 + 64 * 64 + 64 * 3  # the actor alone: 72 → 64 → 64 → 3
    cmd = [sys.executable, "-m", "routing_env", "evaluate", "--run", str(out), "--allow-code", "--split", "test", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == result  # the run folder's options are the ones given above


def test_the_checkpoint_agent_takes_no_invalid_action(run, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from routing_env.agents import load_agent
    from routing_env.evaluation import route_split
    from routing_env.experiments import evaluation_env

    out, _ = run
    monkeypatch.syspath_prepend(str(EXAMPLES))
    env = evaluation_env(ENV, OPTIONS, "test")
    agent = load_agent(out, env, allow_code=True)
    checked = {"decisions": 0, "invalid": 0}

    class Checked:
        def predict(self, obs, env):  # noqa: ANN001, ANN202
            actions = agent.predict(obs, env)
            mask = obs["action_mask"].astype(bool)
            live = mask.any(axis=1)
            checked["decisions"] += int(live.sum())
            checked["invalid"] += int((live & ~mask[np.arange(len(actions)), actions]).sum())
            return actions

    records = route_split(Checked(), env)
    assert len(records.correct) == env.unwrapped.num_instances
    assert checked["decisions"] >= env.unwrapped.num_instances and checked["invalid"] == 0


def test_the_readme_recipe_runs_as_written() -> None:
    import ray

    namespace: dict = {}
    try:
        exec(compile(readme_block("rllib-recipe"), "README.md: rllib-recipe", "exec"), namespace)
    finally:
        ray.shutdown()
    runners = namespace["result"]["env_runners"]
    assert runners["num_env_steps_sampled_lifetime"] > 0 and -1.0 < runners["episode_return_mean"] <= 1.0
