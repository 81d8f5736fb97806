"""The agent protocol and the registry of agents by name (docs/design.md §10)."""

from __future__ import annotations

import abc
import importlib
import inspect
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gymnasium.vector import VectorEnv

from routing_env.checkpoints import atomic_write

from .logger import RunLogger


class Agent(abc.ABC):
    """A routing policy that can act, learn from an environment, and be saved.

    Subclasses take ``(env, *, seed=0, **options)`` in ``__init__``: ``env`` is the vector environment
    they learn on (a :class:`~routing_env.env.RoutingVectorEnv` or a wrapper of one; its spaces fix the
    policy's shapes, ``env.routing`` is the read-only structure). ``predict`` acts on batched
    observations of any environment with the same spaces; ``env`` there is the environment that
    produced them (only privileged baselines such as the oracle read its ``routing.instances()``).
    """

    name: str = "agent"
    uses_labels: bool = False
    """True for upper bounds that peek at labels (the oracle); reports mark them."""
    made_as: str | None = None
    """The name :func:`make_agent` was given (a registered name or ``module.path:ClassName``); saved in
    ``agent.json`` so that :func:`load_agent` makes the same class."""

    def __init__(self, env: VectorEnv, *, seed: int = 0, **options: Any) -> None:
        if options:
            raise TypeError(f"unknown option(s) {sorted(options)} for agent {self.name!r}")
        self.env = env
        self.seed = seed

    @abc.abstractmethod
    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        """Actions ``(B,)`` for a batch of observations."""

    def learn(self, total_steps: int, logger: RunLogger | None = None, progress: bool = False) -> None:
        """Learn from ``self.env`` for ``total_steps`` instance-steps (nothing to learn by default).

        ``logger`` receives TensorBoard scalars; ``progress`` shows a progress bar on stderr.
        """

    def learn_rounds(self, total_steps: int, every: int, after_round: AfterRound, logger: RunLogger | None = None,
                     progress: bool = False) -> None:
        """:meth:`learn` for ``total_steps``, calling ``after_round(steps)`` (the steps learned so far)
        after every ``every`` of them and after the last, shorter round; learning stops when it returns
        ``False`` (early stopping). By default each round is its own :meth:`learn` call
        (:func:`learn_in_rounds`), which is right for an agent whose learning has no schedule over
        ``total_steps``; one with a schedule (an exploration rate decaying over the run) overrides this
        to call back from inside one :meth:`learn`, as the SB3 agents do."""
        learn_in_rounds(self, total_steps, every, after_round, logger, progress)

    def policy_macs(self) -> float:
        """MACs of one decision of the policy itself (0 for rule-based baselines)."""
        return 0.0

    def options(self) -> dict[str, Any]:
        """The constructor options that recreate this agent (saved beside its weights)."""
        return {}

    def save(self, directory: str | Path) -> None:
        """Write ``agent.json`` (name and options) and whatever state the agent has."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"agent": self.made_as or self.name, "seed": self.seed, "options": self.options()}
        data = (json.dumps(payload, indent=2) + "\n").encode()
        atomic_write(directory / "agent.json", lambda f: f.write(data))

    def load_state(self, directory: Path) -> None:
        """Restore what ``save`` wrote beyond ``agent.json`` (nothing by default)."""


AfterRound = Callable[[int], bool]
"""Called with the steps learned so far in a :meth:`Agent.learn_rounds` call; ``False`` stops learning."""


def learn_in_rounds(agent: Any, total_steps: int, every: int, after_round: AfterRound, logger: RunLogger | None = None,
                    progress: bool = False) -> None:
    """``agent.learn`` in rounds of ``every`` steps (the last one shorter), ``after_round`` after each:
    :meth:`Agent.learn_rounds`'s default, and ``train_run``'s for any object with ``learn`` passed to it
    in Python (the CLI takes only subclasses of :class:`Agent`, or classes with all of ``AGENT_INTERFACE``).
    Where the agent counts the steps it learned (``steps_done``: ``reinforce`` learns in whole updates,
    so a round can run a little longer than asked), the rounds and ``after_round`` use its count."""
    first = getattr(agent, "steps_done", None)
    done = 0
    while done < total_steps:
        chunk = min(every, total_steps - done)
        agent.learn(chunk, logger=logger, progress=progress)
        done = done + chunk if first is None else agent.steps_done - first
        if not after_round(done):
            return


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


AGENT_INTERFACE = ("name", "predict", "learn", "learn_rounds", "policy_macs", "options", "save", "load_state")
"""What the CLI and the experiments call on an agent: :class:`Agent` supplies all but ``predict``."""

AGENT_NAMES = ("reinforce", "ppo", "dqn", "a2c", "maskable-ppo", "threshold", "gain", "random", "random-skip", "fixed", "oracle")


def agent_class(name: str) -> type[Agent]:
    """The agent class for a registered name or a custom ``module.path:ClassName``."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        if not module_name or not class_name or ":" in class_name:
            raise ValueError(f"malformed custom agent {name!r}; expected 'module.path:ClassName'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"custom agent {name!r}: cannot import module {module_name!r} ({e})") from None
        cls = getattr(module, class_name, None)
        if cls is None:
            raise ValueError(f"custom agent {name!r}: module {module_name!r} has no attribute {class_name!r}")
        if not isinstance(cls, type):
            raise ValueError(f"custom agent {name!r} must be a class (a subclass of agents.Agent), got a {type(cls).__name__}")
        missing = [attribute for attribute in AGENT_INTERFACE if not hasattr(cls, attribute)]
        if missing:  # make_agent, evaluate, train and load_agent call all of them
            raise ValueError(f"custom agent {name!r} lacks {missing}: subclass agents.Agent, which supplies everything but "
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
