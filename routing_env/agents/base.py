"""The agent protocol: what every agent supplies, and the round-by-round learning loop (docs/design.md §10).
The registry of agents by name is :mod:`routing_env.agents.registry`."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gymnasium.vector import VectorEnv

from routing_env.checkpoints import atomic_write_text, json_text
from routing_env.validation import check_number

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
        self.seed = check_number("seed", seed, low=0, integer=True)  # numpy's and Gymnasium's seeds are >= 0

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
        """The constructor options that recreate this agent (saved beside its weights; reported as
        ``options`` in every evaluation object)."""
        return {}

    def save(self, directory: str | Path) -> None:
        """Write ``agent.json`` (name and options) and whatever state the agent has."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"agent": self.made_as or self.name, "seed": self.seed, "options": self.options()}
        atomic_write_text(directory / "agent.json", json_text(payload))

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


AGENT_INTERFACE = ("name", "predict", "learn", "learn_rounds", "policy_macs", "options", "save", "load_state")
"""What the CLI and the experiments call on an agent: :class:`Agent` supplies all but ``predict``."""
