"""The recipes for other RL libraries (issue 15) and the rewards of one's own run as written."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import load_module

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):  # noqa: ANN201
    return load_module(EXAMPLES / f"{name}.py")


def test_cleanrl_style_ppo_learns_on_the_tiny_cascade() -> None:
    module = load("cleanrl_ppo")
    result = module.main(["--total-timesteps", "20000", "--seed", "0"])
    assert result["last_return"] > result["first_return"] + 0.03
    # its test score is the greedy policy's on every test image: above the first head's, below the oracle's
    from routing_env.backbones import make_backbone

    cache = make_backbone("tiny-cascade").feature_cache("synthetic", "test")
    first_head = float((cache.logits[0].argmax(1) == cache.labels).mean())
    assert first_head < result["test_accuracy"] <= 1.0 and 0.0 < result["test_macs_fraction"] < 1.1


def test_a_study_of_rewards_of_ones_own(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """``examples/my_rewards.py`` as its docstring runs it (a shorter study): each reward is built with
    its parameters, described by its docstring, and pays what it says on every test image."""
    import json

    import numpy as np
    import pytest

    from routing_env import RoutingEnv
    from routing_env.cli import main

    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)  # another test's module of that name, from its own folder
    rewards = ["accuracy", "my_rewards:wrong_answer_penalty[penalty=1]", "my_rewards:depth_shaped[scale=0.5]"]
    assert main(["study", "--backbone", "tiny-cascade", "--rewards", ",".join(rewards), "--lams", "0.1", "--seeds", "0",
                 "--agent", "reinforce", "--steps", "2000", "--workers", "1", "--out", str(tmp_path / "study")]) == 0
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert study["rewards"][rewards[1]]["description"] == "1 if right, −penalty if wrong, minus λ·macs_fraction"
    test = study["rewards"][rewards[1]]["runs"][0]["test"]
    accuracy = test["accuracy"]  # right answers earn 1, wrong ones −1: the correct term's mean is 2·accuracy − 1
    assert test["reward_terms_mean"]["correct"] == pytest.approx(2 * accuracy - 1)
    depth = study["rewards"][rewards[2]]["runs"][0]["test"]["reward_terms_mean"]["depth"]
    assert depth == pytest.approx(0.0, abs=1e-9)  # γ = 1: the shaping sums to −Φ(s₀) = 0 on every episode
    env = RoutingEnv(backbone="tiny-dynamic-resnet", reward="my_rewards:depth_shaped[scale=0.5,gamma=0.9]", allow_skip=True)
    n = env.unwrapped.routing.num_stages
    obs, _ = env.reset(seed=0)
    rng, deeper = np.random.default_rng(0), 0
    for _ in range(20):  # with γ < 1 the episode's shaping is −scale·(1 − γ)·ΣΦ over the points it stood at after s₀
        terminated, passed = False, []
        while not terminated:
            obs, _, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
            if not terminated:
                passed.append(int(obs["position"].argmax()) / n)
        deeper += sum(p > 0 for p in passed)
        assert info["reward_terms"]["depth"] == pytest.approx(-0.5 * (1 - 0.9) * sum(passed), abs=1e-9)
        obs, _ = env.reset()
    assert deeper > 0
    with pytest.raises(ValueError, match="penalty must be >= 0"):
        RoutingEnv(backbone="tiny-cascade", reward="my_rewards:wrong_answer_penalty[penalty=-1]")
