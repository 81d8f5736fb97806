"""Rule-based baselines: random, random skipping, fixed route, confidence threshold, and the
label-peeking oracle."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from gymnasium.vector import VectorEnv

from routing_env.core import SKIP
from routing_env.env import RoutingVectorEnv
from routing_env.evaluation import ExitTable, exit_table, fixed_route_actions, routing_key
from routing_env.validation import check_number

from .base import Agent
from .logger import RunLogger


class RandomAgent(Agent):
    """Uniform over the valid actions (seeded)."""

    name = "random"

    def __init__(self, env: VectorEnv, *, seed: int = 0) -> None:
        super().__init__(env, seed=seed)
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        mask = obs["action_mask"].astype(bool)
        scores = self.rng.random(mask.shape) * mask
        return scores.argmax(axis=1)


class FixedAgent(Agent):
    """Run every stage at one width (default the widest) up to decision point ``position``, then EXIT:
    a static network (a cascade's first ``position + 1`` members in turn, all paid for, since the first
    always runs; an early exit; or a uniformly slimmed ResNet)."""

    name = "fixed"

    def __init__(self, env: VectorEnv, *, seed: int = 0, position: int | None = None, width: int | None = None) -> None:
        super().__init__(env, seed=seed)
        n, widths = env.unwrapped.routing.num_stages, env.unwrapped.routing.widths
        if position is None:
            position = n
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position <= n:
            raise ValueError(f"fixed agent: position must be an integer in 0..{n}, got {position!r}")
        if width is not None and (isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 0 <= width < len(widths)):
            raise ValueError(f"fixed agent: width must be an index into the widths {widths} (0..{len(widths) - 1}), got {width!r}")
        offered = env.unwrapped.routing.offered_widths
        if width is not None and not offered[width]:
            raise ValueError(f"fixed agent: width {width} ({widths[width]:g}) is not offered here (the environment's widths option "
                             f"offers {[w for w, ok in zip(widths, offered) if ok]})")
        self.position = int(position)
        self.width = None if width is None else int(width)

    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        return fixed_route_actions(obs, self.position, self.width)

    def options(self) -> dict[str, Any]:
        return {"position": self.position, "width": self.width}


class RandomSkipAgent(Agent):
    """Skip each skippable stage with probability ``rate`` (seeded), run the others at full width, exit
    at the end: random layer dropping at a chosen mean cost (the baseline of BlockDrop and SkipNet)."""

    name = "random-skip"

    def __init__(self, env: VectorEnv, *, seed: int = 0, rate: float = 0.5) -> None:
        super().__init__(env, seed=seed)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"random-skip agent: rate must be a probability in [0, 1], got {rate!r}")
        self.rate = float(rate)
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        mask = obs["action_mask"].astype(bool)
        run = fixed_route_actions(obs, obs["position"].shape[1] - 1)
        skip = mask[:, SKIP] & (self.rng.random(len(mask)) < self.rate)
        return np.where(skip, SKIP, run).astype(np.int64)

    def options(self) -> dict[str, Any]:
        return {"rate": self.rate}


def threshold_outcomes(table: ExitTable, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Per instance (correct, macs_fraction) of exiting at the first head with confidence >= ``tau``."""
    return table.first_stop(table.confidence >= tau)


def tune_on_table(table: ExitTable, candidates: np.ndarray, stops: Callable[[float], np.ndarray], target: float | None,
                  lam: float) -> tuple[float, float]:
    """The candidate value of an exit rule with the best accuracy on ``table`` within mean cost ``target``
    (or, without one, the best ``accuracy − lam·cost``), and that score; ``stops(value)`` is the rule's
    stop table (:meth:`~routing_env.evaluation.ExitTable.first_stop`). ``candidates`` come cheapest
    first, so that among equal scores the cheapest wins, and where none is cheap enough the first (the
    cheapest) is returned with ``-inf``. The threshold's τ and the ``gain`` agent's are tuned by it."""
    best, best_score = float(candidates[0]), -np.inf
    for value in candidates:
        correct, cost = table.first_stop(stops(float(value)))
        if target is not None and cost.mean() > target:
            continue
        score = correct.mean() if target is not None else correct.mean() - lam * cost.mean()
        if score > best_score:
            best, best_score = float(value), float(score)
    return best, best_score


def tune_threshold(table: ExitTable, target: float | None, lam: float) -> tuple[float, float]:
    """The confidence threshold τ tuned on ``table`` by :func:`tune_on_table`, and its score. The
    candidates are every confidence the table holds, with 0 (exit at the first head) and just above 1
    (never exit early), thinned to 2,001 quantiles on large tables."""
    candidates = np.unique(np.concatenate([table.confidence.ravel(), [0.0, 1.0 + 1e-9]]))  # ascending: τ = 0 the cheapest
    if len(candidates) > 2000:
        candidates = np.quantile(candidates, np.linspace(0, 1, 2001))
    return tune_on_table(table, candidates, lambda tau: table.confidence >= tau, target, lam)


def environment_budget(env: VectorEnv, agent: str) -> float | None:
    """The environment's ``target_macs``, the default budget of the exit rules fitted on ``val``; refused
    where the environment prices another cost (``cost="latency"``: its target is a fraction of the
    reference latency, and the rules tune on MACs fractions)."""
    config = env.unwrapped.config
    if config.target_macs is None:
        return None
    if config.cost != "macs":
        raise ValueError(f"{agent} agent: the environment's target_macs={config.target_macs:g} is a fraction of its cost "
                         f"{config.cost!r}, and the rule tunes on MACs fractions; pass target_macs_fraction")
    return config.target_macs


def check_options(agent: str, **options: float | None) -> None:
    """The options the exit rules fitted on ``val`` share, each ``None`` (the default) or: ``tau`` a
    confidence threshold (>= 0; above 1 never exits before the last head), ``lam`` a price (>= 0),
    ``target_macs_fraction`` a budget (>= 0: at 0 nothing fits, and the rule stops at the first head). A NaN would compare false everywhere and leave τ at 0."""
    bounds = {"tau": {"low": 0, "infinite": True}, "lam": {"low": 0}, "target_macs_fraction": {"low": 0}}
    for name, value in options.items():
        if value is not None:
            check_number(f"{agent} agent: {name}", value, **bounds[name], hint=" or None")


class ThresholdAgent(Agent):
    """Exit at the first head whose max softmax probability is at least ``tau``.

    ``learn`` tunes ``tau`` on the agent's environment (use ``val``): it maximises
    ``accuracy − lam·macs_fraction`` (``lam`` defaults to the environment's), or, with
    ``target_macs_fraction``, the accuracy among thresholds whose mean cost stays within the target
    (τ = 0, the cheapest, where none does).
    """

    name = "threshold"

    def __init__(
        self,
        env: VectorEnv,
        *,
        seed: int = 0,
        tau: float | None = None,
        lam: float | None = None,
        target_macs_fraction: float | None = None,
    ) -> None:
        super().__init__(env, seed=seed)
        check_options("threshold", tau=tau, lam=lam, target_macs_fraction=target_macs_fraction)
        self.tau = 1.0 if tau is None else float(tau)
        self.tune = tau is None
        """``learn`` tunes τ only when none was given (a given τ is the user's choice)."""
        self.lam = env.unwrapped.config.lam if lam is None else float(lam)
        # a budget-targeted environment's budget is the threshold's target too, unless one is given
        self.target = environment_budget(env, "threshold") if target_macs_fraction is None else target_macs_fraction

    def learn(self, total_steps: int = 0, logger: RunLogger | None = None, progress: bool = False) -> None:
        if not self.tune:
            return
        self.tau, _ = tune_threshold(exit_table(self.env), self.target, self.lam)
        if logger is not None:
            logger.scalar("charts/threshold_tau", self.tau, 0)

    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        mask = obs["action_mask"].astype(bool)
        confident = mask[:, 0] & (obs["probs"].max(axis=1) >= self.tau)
        return np.where(confident, 0, fixed_route_actions(obs, env.unwrapped.routing.num_stages))

    def options(self) -> dict[str, Any]:
        return {"tau": self.tau, "lam": self.lam, "target_macs_fraction": self.target}


class OracleAgent(Agent):
    """UPPER BOUND, uses labels: exit at the cheapest head along the full path that is correct.

    Where no head is right, ``when_wrong`` says where it exits: ``first`` (the default: the cheapest
    wrong answer, so the oracle's cost is the least any router could spend for its accuracy) or
    ``last`` (the full path, as a router that cannot tell would). It reads the labels of the
    environment it acts in, so its numbers are an upper bound on early-exit routing along that path,
    never a policy. Under ``max_macs`` the path is the greedy one of
    :func:`~routing_env.evaluation.fixed_route_actions` (the widest RUN that fits, then SKIP): a
    policy that spends the budget otherwise (narrower early, wider late) is not bounded by it.
    """

    name = "oracle"
    uses_labels = True

    def __init__(self, env: VectorEnv, *, seed: int = 0, when_wrong: str = "first") -> None:
        super().__init__(env, seed=seed)
        if when_wrong not in ("first", "last"):
            raise ValueError(f"oracle when_wrong must be 'first' or 'last', got {when_wrong!r}")
        self.when_wrong = when_wrong
        self._targets: dict[tuple[str, ...], np.ndarray] = {}

    def options(self) -> dict[str, Any]:
        return {"when_wrong": self.when_wrong}

    def _target_positions(self, env: VectorEnv) -> np.ndarray:
        key = routing_key(env)  # frozen environments only
        if key not in self._targets:
            # a separate environment: routing the split must not disturb the episodes of `env`
            table = exit_table(RoutingVectorEnv.from_config(env.unwrapped.config, num_envs=256))
            cost = np.where(table.correct, table.macs_fraction, np.inf)
            best = cost.argmin(axis=0)
            best[~table.correct.any(axis=0)] = 0 if self.when_wrong == "first" else len(table.positions) - 1
            self._targets[key] = table.positions[best]
        return self._targets[key]

    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        targets = self._target_positions(env)[env.unwrapped.routing.instances()]
        here = obs["position"].argmax(axis=1)
        return np.where(here >= targets, 0, fixed_route_actions(obs, env.unwrapped.routing.num_stages))
