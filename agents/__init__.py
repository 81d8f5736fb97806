"""Routing agents: REINFORCE, Stable-Baselines3 adapters, and baselines."""

from .base import AGENT_NAMES, Agent, agent_class, load_agent, make_agent
from .logger import RunLogger

__all__ = ["AGENT_NAMES", "Agent", "RunLogger", "agent_class", "load_agent", "make_agent"]
