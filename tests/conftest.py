"""Shared fixtures: a private feature-cache directory, and small environments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import routing_env  # noqa: F401  (registers the environment ids)
from routing_env import RoutingEnv, RoutingVectorEnv


def pytest_configure(config: pytest.Config) -> None:
    """A plain ``pytest`` reads CIFAR-10 where ``make test`` points it, the checkout's ``.data/`` (``make
    data`` unpacks it there), when ROUTING_ENV_DATA is unset: set before any test runs, so every test
    sees the same environment whichever runs first."""
    checkout = Path(__file__).resolve().parents[1] / ".data"
    if "ROUTING_ENV_DATA" not in os.environ and (checkout / "cifar-10-batches-py" / "test_batch").is_file():
        os.environ["ROUTING_ENV_DATA"] = str(checkout)


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
    """The CIFAR-10 root from ROUTING_ENV_DATA (``pytest_configure`` sets it to the checkout's ``.data/``
    when that holds the data); with CI=true its absence fails instead of skipping."""
    root = os.environ.get("ROUTING_ENV_DATA")
    if root and (Path(root) / "cifar-10-batches-py" / "test_batch").is_file():
        return root
    message = "CIFAR-10 not found: set ROUTING_ENV_DATA or run `make data` (it unpacks ../shared/data into .data/)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
