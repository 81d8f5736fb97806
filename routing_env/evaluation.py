"""Walk a whole split in order with a policy and summarise accuracy against compute (docs/design.md §10).

A policy is any object with ``predict(obs, env) -> actions`` over batched observations of a
:class:`~routing_env.env.RoutingVectorEnv` (``env.routing`` lets privileged baselines such as the
oracle read which instances are being routed). Every helper works under every autoreset mode.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from gymnasium.vector import AutoresetMode

from .backbones.base import SKIP_CHOICE
from .core import EXIT, NOT_REACHED, SKIP
from .env import RoutingVectorEnv, terminal_info


class Policy(Protocol):
    def predict(self, obs: dict[str, np.ndarray], env: RoutingVectorEnv) -> np.ndarray: ...


@dataclass(frozen=True)
class Records:
    """Per-instance results of routing a split: arrays of length n, instance order."""

    correct: np.ndarray
    macs: np.ndarray
    macs_fraction: np.ndarray
    exit_position: np.ndarray
    confidence: np.ndarray
    """Max softmax probability of the exit used."""
    probs: np.ndarray
    """(n, C): the softmax of the exit used (``confidence`` is its maximum)."""
    decisions: np.ndarray
    """Steps taken (policy decisions) per episode."""
    reward: np.ndarray
    route: np.ndarray
    """(n, N): each episode's choice per stage (a width index, ``SKIP_CHOICE`` or ``NOT_REACHED``)."""
    reward_terms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Each reward term's episode total per instance (the terminal ``info["reward_terms"]``; they add
    up to ``reward``), so that a reward-shaping study reads which term moved, not only the return."""

    @property
    def nbytes(self) -> int:
        """The bytes of every array held, the reward terms' included (what the fixed-route cache counts)."""
        arrays = [getattr(self, f) for f in self.__dataclass_fields__ if f != "reward_terms"]
        return sum(a.nbytes for a in [*arrays, *self.reward_terms.values()])


def route_split(policy: Policy, env: RoutingVectorEnv, progress: bool = False) -> Records:
    """Route every instance of ``env``'s split once, in order, in chunks of ``env.num_envs``."""
    n, b = env.unwrapped.num_instances, env.num_envs
    disabled = env.metadata.get("autoreset_mode") == AutoresetMode.DISABLED
    out = {k: np.zeros(n) for k in Records.__dataclass_fields__ if k not in ("route", "probs", "reward_terms")}
    terms: dict[str, np.ndarray] = {}
    probs = np.zeros((n, env.single_observation_space["probs"].shape[0]), dtype=np.float32)
    route = np.full((n, env.unwrapped.routing.num_stages), NOT_REACHED, dtype=np.int64)
    starts = range(0, n, b)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch", leave=False, disable=None)  # None: off when not a terminal
    for start in starts:
        count = min(b, n - start)
        index = np.arange(start, start + b) % n
        obs, _ = env.reset(options={"index": index})
        live = np.zeros(b, dtype=bool)
        live[:count] = True
        ret = np.zeros(b)
        steps = np.zeros(b)
        while live.any():
            before = np.array(obs["probs"])  # a copy: the step below may reuse the observation's buffers
            confidence = before.max(axis=1)
            actions = np.asarray(policy.predict(obs, env), dtype=np.int64)
            obs, reward, terminated, truncated, info = env.step(actions)
            info = terminal_info(info)
            ret += np.where(live, reward, 0.0)
            steps += live
            ended = live & terminated
            for i in np.flatnonzero(ended):
                j = start + i
                out["correct"][j] = info["correct"][i]
                out["macs"][j] = info["macs"][i]
                out["macs_fraction"][j] = info["macs_fraction"][i]
                out["exit_position"][j] = info["exit_position"][i]
                out["confidence"][j] = confidence[i]
                probs[j] = before[i]
                out["decisions"][j] = steps[i]
                out["reward"][j] = ret[i]
                route[j] = info["route"][i]
                for name, value in info["reward_terms"].items():
                    terms.setdefault(name, np.zeros(n))[j] = value[i]
            live &= ~terminated
            if disabled and terminated.any() and live.any():  # ended slots wait for a reset before the next step
                obs, _ = env.reset(options={"reset_mask": terminated})
    return Records(
        correct=out["correct"].astype(bool),
        macs=out["macs"],
        macs_fraction=out["macs_fraction"],
        exit_position=out["exit_position"].astype(np.int64),
        confidence=out["confidence"],
        probs=probs,
        decisions=out["decisions"].astype(np.int64),
        reward=out["reward"],
        route=route,
        reward_terms=terms,
    )


class FixedRoute:
    """Run every stage at the widest supported width up to decision point ``position``, then EXIT."""

    def __init__(self, position: int) -> None:
        self.position = position

    def predict(self, obs: dict[str, np.ndarray], env: RoutingVectorEnv) -> np.ndarray:
        return fixed_route_actions(obs, self.position)


BOOTSTRAP = 2000
"""Resamples of the test images for the paired interval of a lead."""


def paired_interval(ours: np.ndarray, theirs: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The 95% interval, in points, of ``mean(ours − theirs)`` (per-image correctness of two rules, or of
    a rule and one network, on the same images) by a paired bootstrap over the images: how far a lead of a few tenths of a point
    (a few dozen images of 10,000) is from chance, which the spread over fold seeds does not say."""
    diff = ours.astype(np.float64) - theirs.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(len(diff), size=len(diff))].mean() for _ in range(BOOTSTRAP)])
    low, high = np.quantile(means, [0.025, 0.975])
    return 100 * float(low), 100 * float(high)


FIXED_ROUTES_CACHED = 64
"""How many fixed-route results :func:`fixed_route_records` keeps (least recently used go first)."""

FIXED_ROUTES_BYTES = 512 * 2**20
"""And how many bytes of arrays at most: each record holds the exit's softmax per instance (``probs``),
(n, C) floats, so on a data set of many classes a few records, not 64, fill the cache."""

_FIXED_ROUTES: OrderedDict[tuple[str, ...], Records] = OrderedDict()


ROUTE_OPTIONS = ("backbone", "dataset", "split", "max_macs", "allow_skip", "widths", "decide_at", "device")
"""The options a fixed route's path depends on (besides the weights): which inputs, which moves are
valid, where it runs. The reward, λ and the rest change only its reward, which the cache leaves out."""


def routing_key(env: Any, config: Any = None) -> tuple[str, ...]:
    """What routing a split with a deterministic rule depends on: the weights by content (sha256, not
    the path they were loaded from) and :data:`ROUTE_OPTIONS` (of ``config`` where given, a variant of
    the environment's own). Frozen environments only."""
    base = env.unwrapped
    if base.routing.live:
        raise ValueError("fixed routes and exit tables are measured on frozen environments; this one trains its backbone "
                         "(train_backbone=True): use routing_env.experiments.evaluation_env, or a saved backbone_weights")
    options = {name: getattr(config or base.config, name) for name in ROUTE_OPTIONS}
    return (base.routing.weights_sha256, json.dumps(options, sort_keys=True, default=str))


def cached_bytes() -> int:
    """The bytes of the arrays the fixed-route cache holds."""
    return sum(r.nbytes for r in _FIXED_ROUTES.values())


def fixed_route_records(env: RoutingVectorEnv, position: int, budget: bool = True) -> Records:
    """``route_split(FixedRoute(position), env)`` for a frozen ``env``, kept for the
    :data:`FIXED_ROUTES_CACHED` most recent (:func:`routing_key`, position) within
    :data:`FIXED_ROUTES_BYTES` (the newest always kept); ``reward`` is left out
    (NaN) and ``reward_terms`` empty, since they depend on options the key does not hold (λ, the reward). Reports need the same fixed routes many
    times: the reference in every summary, the exit table of every threshold. ``budget=False`` routes
    it as if ``env`` had no ``max_macs`` (in an environment built for that, only when not cached):
    the reference path, which a budget would cut short."""
    config = env.unwrapped.config
    if not budget and config.max_macs is not None:
        config = dataclasses.replace(config, max_macs=None)
    key = (*routing_key(env, config), str(position))
    if key in _FIXED_ROUTES:
        _FIXED_ROUTES.move_to_end(key)
        return _FIXED_ROUTES[key]
    if config is not env.unwrapped.config:
        env = RoutingVectorEnv.from_config(config, env.num_envs)
    records = dataclasses.replace(route_split(FixedRoute(position), env), reward=np.full(env.unwrapped.num_instances, np.nan),
                                  reward_terms={})
    _FIXED_ROUTES[key] = records
    while len(_FIXED_ROUTES) > 1 and (len(_FIXED_ROUTES) > FIXED_ROUTES_CACHED or cached_bytes() > FIXED_ROUTES_BYTES):
        _FIXED_ROUTES.popitem(last=False)
    return records


def fixed_route_actions(obs: dict[str, np.ndarray], position: int, width: int | None = None) -> np.ndarray:
    """EXIT at ``position``, else RUN at width index ``width`` where valid, at the widest valid width
    otherwise; where no RUN is valid (under a budget), SKIP where that is, and EXIT only where nothing
    else is. The widest RUN first makes the route greedy under ``max_macs``: the first blocks spend
    the budget, and SKIP then carries the episode on to the next head rather than ending it early."""
    mask = obs["action_mask"].astype(bool)
    here = obs["position"].argmax(axis=1)
    run = mask.shape[1] - 1 - np.argmax(mask[:, :1:-1], axis=1)
    if width is not None:
        run = np.where(mask[:, 2 + width], 2 + width, run)
    run_valid = mask[:, 2:].any(axis=1)
    onward = np.where(run_valid, run, np.where(mask[:, SKIP], SKIP, EXIT))
    return np.where(here >= position, EXIT, onward).astype(np.int64)


@dataclass(frozen=True)
class ExitTable:
    """Per head position p (rows) and instance (columns), the fixed route exiting at p."""

    positions: np.ndarray
    correct: np.ndarray
    macs_fraction: np.ndarray
    confidence: np.ndarray
    probs: np.ndarray
    """(P, n, C): each head's softmax on each instance (``confidence`` is its maximum)."""

    def first_exit(self, stop: np.ndarray) -> np.ndarray:
        """Per instance, the row of the first head where ``stop`` (P or P-1 rows, instances as columns)
        holds; the last head always stops. ``ValueError`` for any other number of rows, which would
        shift the always-stopping row off the last head."""
        heads = len(self.positions)
        if stop.ndim != 2 or stop.shape[0] not in (heads, heads - 1):
            raise ValueError(f"stop must have {heads} or {heads - 1} rows (one per head, the last optional), got shape {stop.shape}")
        stop = np.vstack([stop[: heads - 1], np.ones((1, stop.shape[1]), dtype=bool)])
        return stop.argmax(axis=0)

    def first_stop(self, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per instance (correct, macs_fraction) of exiting at the first head where ``stop`` holds
        (:meth:`first_exit`): how an exit rule on the full-width path is scored without routing the
        split again."""
        first = self.first_exit(stop)
        cols = np.arange(len(first))
        return self.correct[first, cols], self.macs_fraction[first, cols]


def exit_table(env: RoutingVectorEnv) -> ExitTable:
    """Route the split along the full-width path once per head position."""
    positions = np.array(env.unwrapped.routing.head_positions)
    records = [fixed_route_records(env, int(p)) for p in positions]
    return ExitTable(
        positions=positions,
        correct=np.stack([r.correct for r in records]),
        macs_fraction=np.stack([r.macs_fraction for r in records]),
        confidence=np.stack([r.confidence for r in records]),
        probs=np.stack([r.probs for r in records]),
    )


def stage_choices(route: np.ndarray, widths: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per stage, how many episodes ran it at each width (``run``, keyed by the width), skipped it
    (``skip``) or ended before it (``not_reached``): where a policy spends and where it saves, which
    the exit histogram alone does not say once stages can be skipped or narrowed."""
    return [
        {
            "run": {f"{w:g}": int((column == i).sum()) for i, w in enumerate(widths)},
            "skip": int((column == SKIP_CHOICE).sum()),
            "not_reached": int((column == NOT_REACHED).sum()),
        }
        for column in route.T
    ]


def summarize(records: Records, env: RoutingVectorEnv, policy_macs: float = 0.0) -> dict[str, Any]:
    """The evaluation JSON fields (docs/design.md §10) for ``records``; MACs are multiply-accumulates."""
    view = env.unwrapped.routing
    reference = fixed_route_records(env, view.num_stages, budget=False)
    n_positions = view.num_stages + 1
    histogram = np.bincount(records.exit_position, minlength=n_positions)
    mean_decisions = float(records.decisions.mean())
    return {
        "split": view.split,
        "n": int(len(records.correct)),
        "accuracy": float(records.correct.mean()),
        "macs_mean": float(records.macs.mean()),
        "macs_fraction": float(records.macs_fraction.mean()),
        "reward_mean": float(records.reward.mean()),
        "reward_terms_mean": {name: float(value.mean()) for name, value in records.reward_terms.items()},
        "reference_accuracy": float(reference.correct.mean()),
        "reference_macs": view.reference_macs,
        "exit_histogram": histogram.tolist(),
        "decisions_mean": mean_decisions,
        "stage_choices": stage_choices(records.route, view.widths),
        "policy_macs_per_decision": float(policy_macs),
        "macs_fraction_with_policy": float(
            (records.macs.mean() + policy_macs * mean_decisions) / view.reference_macs
        ),
        "unit": "MACs (multiply-accumulates)",
    }
