"""Helpers shared by the tests."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np

from routing_env import RoutingEnv, pretrained


def rollout(env: RoutingEnv, actions: list[int], seed: int) -> list[tuple]:
    """Step ``env`` from ``reset(seed)`` with ``actions`` (cycled), resetting at episode ends."""
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append((obs, reward, terminated, truncated, info))
        if terminated:
            obs, info = env.reset()
            trace.append((obs, info))
    return trace


def assert_same(a: object, b: object) -> None:
    """Exact equality of nested observations, infos and rewards."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def readme_block(marker: str) -> str:
    """The fenced Python block after ``<!-- marker -->`` in the README, exactly as written there."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(rf"<!-- {re.escape(marker)} -->\s*```python\n(.*?)```", text, re.S)
    assert block, f"the README lost its {marker} block"
    return block.group(1)


def shipped_dynamic_card(name: str = "cifar10-resnet20-dynamic") -> dict:
    """The model card of the shipped dynamic ResNet ``name`` (the figures the tests compare against)."""
    folder = pretrained.root() / name
    manifest = json.loads((folder / "manifest.json").read_text())
    return json.loads((folder / f"{manifest['model']}.model_card.json").read_text())


def load_module(path: Path) -> ModuleType:
    """A script that is not part of the package (an example, a benchmark, a training tool) as a module,
    so that a test calls its functions; its ``main`` does not run."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
