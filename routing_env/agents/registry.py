"""The registry of agents by name (docs/design.md §10): the built-in agents, custom ones named
``module.path:ClassName``, and making or reloading an agent from its name and options. Apart from
:mod:`routing_env.agents.base`, so that the protocol imports no agent and every agent can import the protocol; the
built-in agents are imported when first asked for (SB3 is slow to import)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from gymnasium.vector import VectorEnv

from routing_env.plugins import import_named

from .base import AGENT_INTERFACE, Agent


def _registry() -> dict[str, type[Agent]]:
    from .baselines import FixedAgent, OracleAgent, RandomAgent, RandomSkipAgent, ThresholdAgent
    from .gain import GainAgent
    from .reinforce import ReinforceAgent
    from .sb3 import A2CAgent, DQNAgent, MaskablePPOAgent, PPOAgent

    agents: list[type[Agent]] = [
        ReinforceAgent,
        PPOAgent,
        DQNAgent,
        A2CAgent,
        MaskablePPOAgent,
        ThresholdAgent,
        GainAgent,
        RandomAgent,
        FixedAgent,
        OracleAgent,
        RandomSkipAgent,
    ]
    return {cls.name: cls for cls in agents}


AGENT_NAMES = ("reinforce", "ppo", "dqn", "a2c", "maskable-ppo", "threshold", "gain", "random", "random-skip", "fixed", "oracle")


def agent_class(name: str) -> type[Agent]:
    """The agent class for a registered name or a custom ``module.path:ClassName``."""
    if ":" in name:
        cls = import_named(name, "agent", "module.path:ClassName")
        if not isinstance(cls, type):
            raise ValueError(f"custom agent {name!r} must be a class (a subclass of routing_env.agents.Agent), got a {type(cls).__name__}")
        missing = [attribute for attribute in AGENT_INTERFACE if not hasattr(cls, attribute)]
        if missing:  # make_agent, evaluate, train and load_agent call all of them
            raise ValueError(f"custom agent {name!r} lacks {missing}: subclass routing_env.agents.Agent, which supplies everything but "
                             "predict(obs, env)")
        return cls
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown agent {name!r}; expected one of {list(AGENT_NAMES)} or 'module.path:ClassName'")
    return registry[name]


def check_comparable(name: str) -> None:
    """``ValueError`` if the agent ``name`` reads the labels (``uses_labels``, the oracle): an upper bound
    that every sweep and study reports beside the policies, never one of the policies compared, chosen
    or averaged (on ``test`` it would route with the ``test`` labels)."""
    if getattr(agent_class(name), "uses_labels", False):
        raise ValueError(f"agent {name!r} reads the labels (uses_labels): it is an upper bound, which every sweep and "
                         "study reports as its oracle row, not a policy to compare; leave it out of --agent")


def make_agent(name: str, env: VectorEnv, *, seed: int = 0, **options: Any) -> Agent:
    """Construct the agent ``name`` on ``env``; unknown options raise ``TypeError`` naming the valid ones."""
    cls = agent_class(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "seed"]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for agent {name!r}; valid options: {valid}")
    agent = cls(env, seed=seed, **options)
    agent.made_as = name
    return agent


def load_agent(directory: str | Path, env: VectorEnv, allow_code: bool = False) -> Agent:
    """Recreate a saved agent from ``directory/agent.json`` and its state, on ``env``.

    An ``agent.json`` that names ``module.path:ClassName`` makes this import that module, i.e. run code
    that a run folder chose: refused unless ``allow_code`` (``--allow-code``; give it only for folders
    you trust, such as those you trained yourself)."""
    directory = Path(directory)
    meta_path = directory / "agent.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} does not exist: is {directory} a saved agent or run directory?")
    try:
        meta = json.loads(meta_path.read_text())
        name = str(meta["agent"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path} is not an agent description ({e})") from None
    if ":" in name and not allow_code:
        raise ValueError(
            f"{meta_path} names code to import ({name!r}): loading it would run that module; pass "
            "--allow-code (allow_code=True) only for run folders you trust"
        )
    agent = make_agent(name, env, seed=meta.get("seed", 0), **meta.get("options", {}))
    agent.load_state(directory)
    return agent
