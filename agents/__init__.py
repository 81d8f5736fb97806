"""Routing agents: REINFORCE, Stable-Baselines3 adapters, and baselines."""

from .base import AGENT_INTERFACE, AGENT_NAMES, AfterRound, Agent, agent_class, learn_in_rounds, load_agent, make_agent
from .logger import RunLogger

__all__ = ["AGENT_INTERFACE", "AGENT_NAMES", "AfterRound", "Agent", "RunLogger", "agent_class", "learn_in_rounds", "load_agent", "make_agent"]
