"""The recipes for other RL libraries run as written (issue 15)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):  # noqa: ANN201
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cleanrl_style_ppo_learns_on_the_tiny_cascade() -> None:
    module = load("cleanrl_ppo")
    result = module.main(["--total-timesteps", "20000", "--seed", "0"])
    assert result["last_return"] > result["first_return"] + 0.03
    # its test score is the greedy policy's on every test image: above the first head's, below the oracle's
    from routing_env.backbones import make_backbone

    cache = make_backbone("tiny-cascade").feature_cache("synthetic", "test")
    first_head = float((cache.logits[0].argmax(1) == cache.labels).mean())
    assert first_head < result["test_accuracy"] <= 1.0 and 0.0 < result["test_macs_fraction"] < 1.1
