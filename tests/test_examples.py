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
    result = load("cleanrl_ppo").main(["--total-timesteps", "20000", "--seed", "0"])
    assert result["last_return"] > result["first_return"] + 0.03
