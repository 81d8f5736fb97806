"""routing-env: Gymnasium environments for learning per-input routing policies over neural backbones.

>>> import gymnasium as gym, routing_env
>>> env = gym.make("routing_env/Cascade-v0", lam=0.1)
"""

from __future__ import annotations

from gymnasium.envs.registration import register

from .backbones import DYNAMIC_BACKBONE
from .core import EXIT, RUN, SKIP, RoutingCore, RoutingView
from .env import EnvConfig, RoutingEnv, RoutingVectorEnv
from .rewards import RewardFn, make_reward
from .routed import RoutedModel

__version__ = "0.4.0.dev0"

ENV_IDS = ("routing_env/Cascade-v0", "routing_env/DynamicResNet-v0")

register(
    id="routing_env/Cascade-v0",
    entry_point="routing_env.env:make_cascade_env",
    vector_entry_point="routing_env.env:make_cascade_vector_env",
)
register(
    id="routing_env/DynamicResNet-v0",
    entry_point="routing_env.env:make_dynamic_env",
    vector_entry_point="routing_env.env:make_dynamic_vector_env",
    kwargs={"backbone": DYNAMIC_BACKBONE},
)

__all__ = [
    "ENV_IDS",
    "EXIT",
    "RUN",
    "SKIP",
    "EnvConfig",
    "RewardFn",
    "RoutedModel",
    "RoutingCore",
    "RoutingView",
    "RoutingEnv",
    "RoutingVectorEnv",
    "make_reward",
]
