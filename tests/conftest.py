"""Shared fixtures: a private feature-cache directory, and small environments."""

from __future__ import annotations

import os

import pytest

import routing_env  # noqa: F401  (registers the environment ids)
from routing_env import RoutingEnv, RoutingVectorEnv


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Feature caches of this test session go to a temporary directory (subprocesses inherit it)."""
    os.environ["ROUTING_ENV_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def env() -> RoutingEnv:
    return RoutingEnv(backbone="tiny-cascade")


@pytest.fixture
def venv() -> RoutingVectorEnv:
    return RoutingVectorEnv(backbone="tiny-cascade", num_envs=8)


@pytest.fixture(scope="session")
def cifar_root() -> str:
    """The CIFAR-10 root from ROUTING_ENV_DATA; with CI=true its absence fails instead of skipping."""
    from pathlib import Path

    root = os.environ.get("ROUTING_ENV_DATA")
    if root and (Path(root) / "cifar-10-batches-py" / "test_batch").is_file():
        return root
    message = "CIFAR-10 not found: set ROUTING_ENV_DATA (make test unpacks ../shared/data into .data/)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
