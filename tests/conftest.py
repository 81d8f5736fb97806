"""Shared fixtures: a private feature-cache directory, and small environments."""

from __future__ import annotations

import os

import numpy as np
import pytest

import routing_env  # noqa: F401  (registers the environment ids)
from routing_env import RoutingEnv, RoutingVectorEnv


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Feature caches of this test session go to a temporary directory (subprocesses inherit it)."""
    os.environ["ROUTING_ENV_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def env() -> RoutingEnv:
    return RoutingEnv()


@pytest.fixture
def venv() -> RoutingVectorEnv:
    return RoutingVectorEnv(num_envs=8)
