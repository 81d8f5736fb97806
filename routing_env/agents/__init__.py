"""Routing agents: REINFORCE, Stable-Baselines3 adapters, and baselines."""

from .base import AGENT_INTERFACE, AfterRound, Agent, learn_in_rounds
from .logger import RunLogger
from .registry import AGENT_NAMES, agent_class, check_comparable, load_agent, make_agent

__all__ = ["AGENT_INTERFACE", "AGENT_NAMES", "AfterRound", "Agent", "RunLogger", "agent_class", "check_comparable", "learn_in_rounds", "load_agent", "make_agent"]
