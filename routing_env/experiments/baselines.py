"""The baselines a learned policy is compared with, each evaluated on a split (``test`` by default):
every static route, random skipping at a matched cost, the confidence threshold tuned on ``val``, and
the label-peeking oracle. Every row's environment comes from :func:`~routing_env.experiments.train.evaluation_env`
(frozen; with ``run``, a co-trained run's saved backbone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import exit_table
from .train import evaluation_env, evaluation_json


def backbone_moves(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` without the restrictions of the move set a policy is offered (``widths``,
    ``allow_skip=False``, ``decide_at`` and the hard budget ``max_macs``): the static routes and random
    skipping a policy is compared with are the backbone's, decided per block, so that a policy offered
    fewer moves or fewer decisions still meets every fixed route the network has (under a budget the
    routes above it are listed too, whole: cut short by the budget, a "member alone" row would pair
    one route's accuracy with another's cost)."""
    out = {k: v for k, v in env_kwargs.items() if k not in ("widths", "decide_at", "max_macs")}
    if out.get("allow_skip") is False:
        del out["allow_skip"]
    return out


def static_rows(env_id: str, env_kwargs: dict[str, Any], split: str = "test", run: Path | None = None) -> list[dict[str, Any]]:
    """Every single model evaluated on ``split``, cheapest first: the backbone's, whatever move set
    ``env_kwargs`` offers a policy (:func:`backbone_moves`).

    The predictions are those of agent ``fixed`` exiting at each head. For a cascade, head ``k`` is
    member ``k``'s own, so the row is that member alone: its MACs are the member's, not those of the
    cascade run up to it (kept as ``cascade_route_macs_fraction``). A backbone with several widths
    adds the uniformly slimmed networks, every stage at one width, exiting at the end and at every
    earlier head: a policy is compared with every fixed route an exit and a width make (without the
    early exits at narrow widths the hull stopped at the narrowest network's cost, and a policy cheaper
    than that had no static route to meet).
    """
    from routing_env.agents import make_agent

    env = evaluation_env(env_id, backbone_moves(env_kwargs), split, run)
    view = env.routing
    rows = []
    for position in view.head_positions:
        row = evaluation_json(make_agent("fixed", env, position=position), env, env_id)
        row = {**row, "label": f"exit {position} (full path)", "position": position}
        if view.member_macs is not None and view.member_names is not None:
            macs = view.member_macs[position]
            # the reward was earned on the cascade's route (every earlier member run too): kept under
            # that name beside its cost, not passed off as the member's
            row.update({
                "label": f"{view.member_names[position]} alone",
                "cascade_route_macs_fraction": row["macs_fraction"],
                "cascade_route_reward_mean": row.pop("reward_mean"),
                "cascade_route_reward_terms_mean": row.pop("reward_terms_mean"),
                "macs_mean": macs,
                "macs_fraction": macs / view.reference_macs,
                "macs_fraction_with_policy": macs / view.reference_macs,
            })
        rows.append(row)
    for j, w in enumerate(view.widths[:-1]):
        row = evaluation_json(make_agent("fixed", env, width=j), env, env_id)
        rows.append({**row, "label": f"width {w:g} (every block)", "position": view.num_stages, "width": w})
        for position in view.head_positions:
            if 0 < position < view.num_stages:
                row = evaluation_json(make_agent("fixed", env, position=position, width=j), env, env_id)
                rows.append({**row, "label": f"exit {position} at width {w:g}", "position": position, "width": w})
    return sorted(rows, key=lambda r: r["macs_mean"])


def random_skip_row(
    env_id: str, env_kwargs: dict[str, Any], target_macs_fraction: float, split: str = "test", run: Path | None = None
) -> dict[str, Any] | None:
    """Random skipping (agent ``random-skip``) at the rate whose expected cost is ``target_macs_fraction``
    (computed from the cost table, so nothing is tuned on ``split``), evaluated on ``split`` with the
    backbone's moves (:func:`backbone_moves`); ``None`` for backbones that cannot skip (or where the
    environment leaves SKIP off by default, as for cascades)."""
    from routing_env.agents import make_agent

    env = evaluation_env(env_id, backbone_moves(env_kwargs), split, run)
    view = env.routing
    n = view.num_stages
    skippable = view.static_valid[:n, 1]
    if not skippable.any():
        return None
    widest = view.act_cost[:n, -1]
    full = (view.prefix_macs + widest.sum()) / view.reference_macs
    saving = (widest[skippable] - view.act_cost[:n, 1][skippable]).sum() / view.reference_macs
    rate = float(np.clip((full - target_macs_fraction) / saving, 0.0, 1.0))
    row = evaluation_json(make_agent("random-skip", env, rate=rate), env, env_id)
    return {**row, "label": f"random skip, rate {rate:.3f}", "rate": rate, "target_macs_fraction": target_macs_fraction}


def oracle_row(env_id: str, env_kwargs: dict[str, Any], split: str = "test", run: Path | None = None) -> dict[str, Any]:
    """The label-peeking oracle on ``split`` (an upper bound, never a policy)."""
    from routing_env.agents import make_agent

    env = evaluation_env(env_id, env_kwargs, split, run)
    return {**evaluation_json(make_agent("oracle", env), env, env_id), "label": "oracle"}


def threshold_row(
    env_id: str, env_kwargs: dict[str, Any], target_macs_fraction: float, split: str = "test", run: Path | None = None
) -> dict[str, Any]:
    """The confidence threshold tuned on ``val`` for the best accuracy within ``target_macs_fraction``,
    evaluated on ``split``. The row keeps the chosen τ's ``val`` accuracy and cost: below the target
    where a dearer τ is no more accurate on ``val`` (then several targets share one τ), above it where
    no τ fits (τ = 0)."""
    from routing_env.agents import make_agent
    from routing_env.agents.baselines import threshold_outcomes

    val = evaluation_env(env_id, env_kwargs, "val", run)
    agent = make_agent("threshold", val, target_macs_fraction=target_macs_fraction)
    agent.learn(0)
    val_correct, val_cost = threshold_outcomes(exit_table(val), agent.tau)
    env = evaluation_env(env_id, env_kwargs, split, run)
    return {**evaluation_json(agent, env, env_id), "label": f"threshold tau={agent.tau:.4f}", "tau": agent.tau,
            "val_accuracy": float(val_correct.mean()), "val_macs_fraction": float(val_cost.mean())}


def calibrated_row(env_id: str, env_kwargs: dict[str, Any], run: Path, agent: str, target: float, split: str = "test") -> dict[str, Any]:
    """The run's policy with its EXIT score biased so that its greedy MACs fraction on ``val`` is
    within ``target`` (:func:`routing_env.agents.calibration.calibrate_exit_bias`), evaluated on ``split``: what
    a ``target_macs`` run spends once the budget is met by the greedy policy rather than the sampled one."""
    from routing_env.agents import load_agent
    from routing_env.agents.calibration import calibrate_exit_bias, greedy_cost

    val = evaluation_env(env_id, env_kwargs, "val", run)
    calibrated = calibrate_exit_bias(load_agent(run, val, allow_code=":" in agent), val, target)
    env = evaluation_env(env_id, env_kwargs, split, run)
    return {**evaluation_json(calibrated, env, env_id), "label": f"exit bias {calibrated.bias:+.4f}",
            "bias": calibrated.bias, "val_macs_fraction": greedy_cost(calibrated, val), "target": target}


def threshold_curve(
    env_id: str, env_kwargs: dict[str, Any], points: int = 41, split: str = "test", run: Path | None = None
) -> list[dict[str, float]]:
    """Accuracy and mean MACs fraction on ``split`` of the threshold rule at ``points`` values of τ
    (the quantiles of the confidences seen on ``val``; no choice is made on ``split``)."""
    from routing_env.agents.baselines import threshold_outcomes

    val = exit_table(evaluation_env(env_id, env_kwargs, "val", run))
    earlier = val.confidence[:-1]  # none with a single head: the curve is its one point
    quantiles = np.quantile(earlier, np.linspace(0, 1, points)) if earlier.size else np.empty(0)
    taus = np.unique(np.concatenate([quantiles, [1.0 + 1e-9]]))
    table = exit_table(evaluation_env(env_id, env_kwargs, split, run))
    curve = []
    for tau in taus:
        correct, cost = threshold_outcomes(table, float(tau))
        curve.append({"tau": float(tau), "accuracy": float(correct.mean()), "macs_fraction": float(cost.mean())})
    return sorted(curve, key=lambda p: p["macs_fraction"])


def static_hull(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The upper concave envelope of the static routes' (``macs_fraction``, ``accuracy``) points,
    cheapest first: what the best random mixture of two fixed routes reaches at each cost (each input
    sent down one route or the other at a fixed rate). A learned router is only interesting above it."""
    points = sorted({(float(r["macs_fraction"]), float(r["accuracy"])) for r in rows})
    hull: list[tuple[float, float]] = []
    for x, y in points:
        if hull and hull[-1][0] == x:  # the same cost: keep the more accurate
            if y <= hull[-1][1]:
                continue
            hull.pop()
        while len(hull) >= 2 and _not_above(hull[-2], hull[-1], (x, y)):
            hull.pop()
        hull.append((x, y))
    # a dearer route that is less accurate than a cheaper one is never part of the best mixture
    best = [p for i, p in enumerate(hull) if all(p[1] > q[1] for q in hull[:i])]
    return [{"macs_fraction": x, "accuracy": y} for x, y in best]


def _not_above(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> bool:
    """Whether ``b`` lies on or below the segment from ``a`` to ``c``."""
    return (b[1] - a[1]) * (c[0] - a[0]) <= (c[1] - a[1]) * (b[0] - a[0])


def hull_accuracy(hull: list[dict[str, float]], macs_fraction: float) -> float | None:
    """The accuracy of the best mixture of static routes (:func:`static_hull`) costing at most
    ``macs_fraction``: linear between hull points, the dearest point's beyond it, ``None`` below the
    cheapest route."""
    xs = [p["macs_fraction"] for p in hull]
    if not hull or macs_fraction < xs[0]:
        return None
    return float(np.interp(macs_fraction, xs, [p["accuracy"] for p in hull]))
