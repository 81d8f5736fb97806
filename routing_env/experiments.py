"""Experiments on a routing environment: train a policy on ``val``, evaluate it, and sweep λ × seeds
into a Pareto front beside the static models, the confidence-threshold curve and the oracle (DESIGN §10).

Policies (and the threshold baseline's τ) are always tuned on ``val``; ``test`` is only evaluated.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import gymnasium as gym
import numpy as np

from . import ENV_IDS, __version__
from .backbones import Cascade
from .checkpoints import save_state_dict
from .env import RoutingVectorEnv
from .evaluation import exit_table, route_split, summarize

if TYPE_CHECKING:
    from agents import Agent

EVAL_BATCH = 256


def make_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> RoutingVectorEnv:
    """A natively vectorised routing environment for a registered id."""
    if env_id not in gym.registry or not env_id.startswith("routing_env/"):
        raise ValueError(f"unknown environment id {env_id!r}; expected one of {list(ENV_IDS)}")
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(env, RoutingVectorEnv)
    return env


def evaluation_json(agent: Any, env: RoutingVectorEnv, env_id: str, progress: bool = False) -> dict[str, Any]:
    """The evaluation object of DESIGN §10 for ``agent`` on ``env``'s split."""
    records = route_split(agent, env, progress=progress)
    summary = summarize(records, env, agent.policy_macs())
    return {"policy": agent.name, "uses_labels": bool(getattr(agent, "uses_labels", False)), "env": env_id, **summary}


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def frozen_kwargs(env_kwargs: dict[str, Any], run: Path) -> dict[str, Any]:
    """The options that evaluate a run: a co-trained run's backbone is its ``backbone.pt``, frozen."""
    if not env_kwargs.get("train_backbone"):
        return env_kwargs
    return {**env_kwargs, "train_backbone": False, "backbone_weights": str(run / "backbone.pt")}


def train_run(
    env_id: str,
    env_kwargs: dict[str, Any],
    agent_name: str,
    agent_kwargs: dict[str, Any],
    seed: int,
    steps: int,
    num_envs: int,
    out: Path,
    progress: bool = False,
) -> tuple[Agent, dict[str, Any]]:
    """Train ``agent_name`` on ``env_kwargs['split']`` (``val`` unless given); write ``config.json``,
    tensorboard events under ``tb/``, the policy, and ``eval.json`` (on the training split)."""
    from agents import RunLogger, make_agent

    env_kwargs = {"split": "val", **env_kwargs}
    out.mkdir(parents=True, exist_ok=True)
    env = make_vector_env(env_id, num_envs, **env_kwargs)
    agent = make_agent(agent_name, env, seed=seed, **agent_kwargs)
    config = {
        "env": env_id,
        "env_kwargs": env_kwargs,
        "agent": agent_name,
        "agent_kwargs": agent_kwargs,
        "seed": seed,
        "steps": steps,
        "num_envs": num_envs,
        "routing_env_version": __version__,
    }
    write_json(out / "config.json", config)
    logger = RunLogger(out / "tb")
    start = time.time()
    agent.learn(steps, logger=logger, progress=progress)
    logger.close()
    agent.save(out)
    eval_kwargs = env_kwargs
    if env_kwargs.get("train_backbone"):
        save_state_dict(agent.training_env.core.backbone.module.state_dict(), out / "backbone.pt")
        eval_kwargs = frozen_kwargs(env_kwargs, out)
    result = evaluation_json(agent, make_vector_env(env_id, EVAL_BATCH, **eval_kwargs), env_id)
    result["train_seconds"] = round(time.time() - start, 2)
    write_json(out / "eval.json", result)
    return agent, result


# --- baselines ------------------------------------------------------------------------------------
def static_rows(env_id: str, env_kwargs: dict[str, Any], split: str = "test") -> list[dict[str, Any]]:
    """Every single model evaluated on ``split``, cheapest first.

    The predictions are those of agent ``fixed`` exiting at each head. For a cascade, head ``k`` is
    member ``k``'s own, so the row is that member alone: its MACs are the member's, not those of the
    cascade run up to it (kept as ``cascade_route_macs_fraction``). A backbone with several widths
    adds the uniformly slimmed networks: every stage at one width, exit at the end.
    """
    from agents import make_agent

    env = make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": split})
    backbone = env.core.backbone
    rows = []
    for position in sorted(backbone.spec.head_positions):
        row = evaluation_json(make_agent("fixed", env, position=position), env, env_id)
        row = {**row, "label": f"exit {position} (full path)", "position": position}
        if isinstance(backbone, Cascade):
            macs = backbone.member_macs[position]
            row.update({
                "label": f"{backbone.member_names[position]} alone",
                "cascade_route_macs_fraction": row["macs_fraction"],
                "macs_mean": macs,
                "macs_fraction": macs / env.core.reference_macs,
                "macs_fraction_with_policy": macs / env.core.reference_macs,
            })
        rows.append(row)
    for j, w in enumerate(backbone.spec.widths[:-1]):
        row = evaluation_json(make_agent("fixed", env, width=j), env, env_id)
        rows.append({**row, "label": f"width {w:g} (every block)", "position": backbone.spec.num_stages, "width": w})
    return sorted(rows, key=lambda r: r["macs_mean"])


def random_skip_row(env_id: str, env_kwargs: dict[str, Any], target_macs_fraction: float, split: str = "test") -> dict[str, Any] | None:
    """Random skipping (agent ``random-skip``) at the rate whose expected cost is ``target_macs_fraction``
    (computed from the cost table, so nothing is tuned on ``split``), evaluated on ``split``; ``None``
    for backbones that offer no SKIP."""
    from agents import make_agent

    env = make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": split})
    core = env.core
    skippable = core.static_valid[: core.num_stages, 1]
    if not skippable.any():
        return None
    widest = core.act_cost[: core.num_stages, -1]
    full = (core.backbone.costs.prefix + widest.sum()) / core.reference_macs
    saving = (widest[skippable] - core.act_cost[: core.num_stages, 1][skippable]).sum() / core.reference_macs
    rate = float(np.clip((full - target_macs_fraction) / saving, 0.0, 1.0))
    row = evaluation_json(make_agent("random-skip", env, rate=rate), env, env_id)
    return {**row, "label": f"random skip, rate {rate:.3f}", "rate": rate, "target_macs_fraction": target_macs_fraction}


def oracle_row(env_id: str, env_kwargs: dict[str, Any], split: str = "test") -> dict[str, Any]:
    """The label-peeking oracle on ``split`` (an upper bound, never a policy)."""
    from agents import make_agent

    env = make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": split})
    return {**evaluation_json(make_agent("oracle", env), env, env_id), "label": "oracle"}


def threshold_row(env_id: str, env_kwargs: dict[str, Any], target_macs_fraction: float, split: str = "test") -> dict[str, Any]:
    """The confidence threshold tuned on ``val`` for the best accuracy within ``target_macs_fraction``,
    evaluated on ``split``."""
    from agents import make_agent

    val = make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": "val"})
    agent = make_agent("threshold", val, target_macs_fraction=target_macs_fraction)
    agent.learn(0)
    env = make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": split})
    return {**evaluation_json(agent, env, env_id), "label": f"threshold tau={agent.tau:.4f}", "tau": agent.tau}


def threshold_curve(env_id: str, env_kwargs: dict[str, Any], points: int = 41, split: str = "test") -> list[dict[str, float]]:
    """Accuracy and mean MACs fraction on ``split`` of the threshold rule at ``points`` values of τ
    (the quantiles of the confidences seen on ``val``; no choice is made on ``split``)."""
    from agents.baselines import threshold_outcomes

    val = exit_table(make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": "val"}))
    taus = np.unique(np.concatenate([np.quantile(val.confidence[:-1], np.linspace(0, 1, points)), [1.0 + 1e-9]]))
    table = exit_table(make_vector_env(env_id, EVAL_BATCH, **{**env_kwargs, "split": split}))
    curve = []
    for tau in taus:
        correct, cost = threshold_outcomes(table, float(tau))
        curve.append({"tau": float(tau), "accuracy": float(correct.mean()), "macs_fraction": float(cost.mean())})
    return sorted(curve, key=lambda p: p["macs_fraction"])


# --- sweeps ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """Which policies a sweep trains: every agent × λ × seed, each for ``steps`` instance-steps on ``val``."""

    env_id: str
    env_kwargs: dict[str, Any]
    agents: tuple[str, ...]
    lams: tuple[float, ...]
    seeds: tuple[int, ...]
    steps: int
    num_envs: int = 16
    agent_kwargs: dict[str, Any] = field(default_factory=dict)


def run_name(agent: str, lam: float, seed: int) -> str:
    return f"{agent.replace(':', '_').replace('.', '_')}-lam{lam:g}-seed{seed}"


def sweep_run(spec: SweepSpec, agent: str, lam: float, seed: int, out: Path, progress: bool = False) -> dict[str, Any]:
    """Train one policy on ``val`` and evaluate it on ``test`` beside the threshold tuned on ``val`` to
    its ``val`` cost; a run whose ``test.json`` exists is read back instead (sweeps resume)."""
    directory = out / "runs" / run_name(agent, lam, seed)
    done = directory / "test.json"
    setting = {"env": spec.env_id, "env_kwargs": spec.env_kwargs, "steps": spec.steps, "num_envs": spec.num_envs,
               "agent_kwargs": spec.agent_kwargs}
    if done.is_file():
        record = json.loads(done.read_text())
        if record["setting"] != setting:
            raise ValueError(f"{done} was made with {record['setting']}, not {setting}: choose another --out")
        return record
    env_kwargs = {**spec.env_kwargs, "lam": lam}
    policy, val_result = train_run(
        spec.env_id, env_kwargs, agent, spec.agent_kwargs, seed, spec.steps, spec.num_envs, directory, progress
    )
    test_env = make_vector_env(spec.env_id, EVAL_BATCH, **{**env_kwargs, "split": "test"})
    record = {
        "setting": setting,
        "agent": agent,
        "lam": lam,
        "seed": seed,
        "run": str(directory),
        "val": val_result,
        "test": evaluation_json(policy, test_env, spec.env_id),
        "threshold_at_val_cost": threshold_row(spec.env_id, env_kwargs, val_result["macs_fraction"]),
        "random_skip_at_val_cost": random_skip_row(spec.env_id, env_kwargs, val_result["macs_fraction"]),
    }
    write_json(done, record)
    return record


def group_runs(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of each (agent, λ) on ``test``, with the matched-cost threshold."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["agent"], r["lam"]), []).append(r)
    rows = []
    for (agent, lam), runs in groups.items():
        acc = np.array([r["test"]["accuracy"] for r in runs])
        frac = np.array([r["test"]["macs_fraction"] for r in runs])
        with_policy = np.array([r["test"]["macs_fraction_with_policy"] for r in runs])
        thr_acc = np.array([r["threshold_at_val_cost"]["accuracy"] for r in runs])
        thr_frac = np.array([r["threshold_at_val_cost"]["macs_fraction"] for r in runs])
        rows.append({
            "agent": agent,
            "lam": lam,
            "seeds": [r["seed"] for r in runs],
            "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std()),
            "macs_fraction_mean": float(frac.mean()),
            "macs_fraction_std": float(frac.std()),
            "macs_fraction_with_policy_mean": float(with_policy.mean()),
            "threshold_accuracy_mean": float(thr_acc.mean()),
            "threshold_macs_fraction_mean": float(thr_frac.mean()),
            "accuracy_minus_threshold_mean": float((acc - thr_acc).mean()),
        })
        skips = [r.get("random_skip_at_val_cost") for r in runs]
        if all(s is not None for s in skips):
            rows[-1]["random_skip_accuracy_mean"] = float(np.mean([s["accuracy"] for s in skips]))
            rows[-1]["random_skip_macs_fraction_mean"] = float(np.mean([s["macs_fraction"] for s in skips]))
    return rows


def reaching_reference(groups: Sequence[dict[str, Any]], reference_accuracy: float) -> dict[str, Any] | None:
    """The cheapest (agent, λ) whose mean ``test`` accuracy reaches the reference network's, if any."""
    reached = [g for g in groups if g["accuracy_mean"] >= reference_accuracy]
    return min(reached, key=lambda g: g["macs_fraction_mean"]) if reached else None


def run_sweep(spec: SweepSpec, out: str | Path, progress: bool = False) -> dict[str, Any]:
    """Every run of ``spec`` (resuming finished ones), the baselines on ``test``, and the Pareto files:
    ``results.json``, ``pareto.csv``, ``pareto.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for agent in spec.agents:
        for lam in spec.lams:
            for seed in spec.seeds:
                record = sweep_run(spec, agent, lam, seed, out, progress)
                records.append(record)
                t = record["test"]
                print(f"{agent} lam={lam:g} seed={seed}: test accuracy {t['accuracy']:.4f} at {t['macs_fraction']:.4f} "
                      f"of the reference MACs", file=sys.stderr, flush=True)
    singles = static_rows(spec.env_id, spec.env_kwargs)
    groups = group_runs(records)
    results = {
        "spec": asdict(spec),
        "split": "test",
        "tuned_on": "val",
        "unit": "MACs (multiply-accumulates); fractions of the reference (a cascade's largest member, a dynamic ResNet's full network)",
        "singles": singles,
        "oracle": oracle_row(spec.env_id, spec.env_kwargs),
        "threshold_curve": threshold_curve(spec.env_id, spec.env_kwargs),
        "groups": groups,
        "reaching_reference": reaching_reference(groups, max(singles, key=lambda s: s["macs_mean"])["accuracy"]),
        "runs": records,
    }
    write_json(out / "results.json", results)
    write_pareto_csv(out / "pareto.csv", results)
    plot_pareto(out / "pareto.png", results, title=f"{spec.env_id} {spec.env_kwargs.get('backbone', '')}".strip())
    return results


def write_pareto_csv(path: Path, results: dict[str, Any]) -> None:
    """One row per point of the Pareto plot: kind, label, agent, lam, seed, accuracy, macs_fraction."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "label", "agent", "lam", "seed", "accuracy", "macs_fraction", "macs_fraction_with_policy"])
        for s in results["singles"]:
            w.writerow(["single", s["label"], "fixed", "", "", s["accuracy"], s["macs_fraction"], s["macs_fraction"]])
        for p in results["threshold_curve"]:
            w.writerow(["threshold", f"tau={p['tau']:.4f}", "threshold", "", "", p["accuracy"], p["macs_fraction"], p["macs_fraction"]])
        o = results["oracle"]
        w.writerow(["oracle", o["label"], "oracle", "", "", o["accuracy"], o["macs_fraction"], o["macs_fraction"]])
        for r in results["runs"]:
            t = r["test"]
            w.writerow(["policy", run_name(r["agent"], r["lam"], r["seed"]), r["agent"], r["lam"], r["seed"],
                        t["accuracy"], t["macs_fraction"], t["macs_fraction_with_policy"]])
            s = r.get("random_skip_at_val_cost")
            if s is not None:
                w.writerow(["random-skip", s["label"], "random-skip", r["lam"], r["seed"], s["accuracy"], s["macs_fraction"], s["macs_fraction"]])


def plot_pareto(path: Path, results: dict[str, Any], title: str) -> None:
    """Accuracy against mean MACs fraction: single models, threshold curve, oracle, learned policies
    (mean ± std over seeds per λ, seeds faint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    curve = results["threshold_curve"]
    ax.plot([p["macs_fraction"] for p in curve], [p["accuracy"] for p in curve], "-", color="0.55", lw=1.5,
            label="confidence threshold (τ grid)")
    for s in results["singles"]:
        ax.plot(s["macs_fraction"], s["accuracy"], "s", color="black", ms=6)
        ax.annotate(s["label"], (s["macs_fraction"], s["accuracy"]), textcoords="offset points", xytext=(5, -10), fontsize=7)
    o = results["oracle"]
    ax.plot(o["macs_fraction"], o["accuracy"], "*", color="gold", mec="black", ms=12, label="oracle (uses labels)")
    skips = [r["random_skip_at_val_cost"] for r in results["runs"] if r.get("random_skip_at_val_cost")]
    if skips:
        ax.plot([s["macs_fraction"] for s in skips], [s["accuracy"] for s in skips], "x", color="0.3", ms=6,
                label="random skipping at each policy's val cost")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    agents = list(dict.fromkeys(g["agent"] for g in results["groups"]))
    for k, agent in enumerate(agents):
        color = colors[k % len(colors)]
        runs = [r["test"] for r in results["runs"] if r["agent"] == agent]
        ax.plot([t["macs_fraction"] for t in runs], [t["accuracy"] for t in runs], "o", color=color, alpha=0.25, ms=4)
        groups = sorted((g for g in results["groups"] if g["agent"] == agent), key=lambda g: g["macs_fraction_mean"])
        ax.errorbar([g["macs_fraction_mean"] for g in groups], [g["accuracy_mean"] for g in groups],
                    xerr=[g["macs_fraction_std"] for g in groups], yerr=[g["accuracy_std"] for g in groups],
                    fmt="o-", color=color, ms=5, capsize=2, label=f"{agent} (mean ± std over seeds)")
    ax.set_xlabel("mean MACs / reference MACs")
    ax.set_ylabel(f"accuracy on {results['split']}")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def groups_markdown(results: dict[str, Any]) -> str:
    """The sweep as a Markdown table (accuracy and MACs fraction on ``test``)."""
    skips = all("random_skip_accuracy_mean" in g for g in results["groups"]) and results["groups"]
    extra = " random skip at the same val cost |" if skips else ""
    lines = [
        "| policy | λ | seeds | accuracy | MACs fraction | with policy net | threshold at the same val cost |" + extra,
        "|---|---|---|---|---|---|---|" + ("---|" if skips else ""),
    ]
    dash = " – |" if skips else ""
    for s in results["singles"]:
        lines.append(f"| {s['label']} | – | – | {s['accuracy']:.4f} | {s['macs_fraction']:.4f} | – | – |" + dash)
    for g in results["groups"]:
        lines.append(
            f"| {g['agent']} | {g['lam']:g} | {len(g['seeds'])} | {g['accuracy_mean']:.4f} ± {g['accuracy_std']:.4f} | "
            f"{g['macs_fraction_mean']:.4f} ± {g['macs_fraction_std']:.4f} | {g['macs_fraction_with_policy_mean']:.4f} | "
            f"{g['threshold_accuracy_mean']:.4f} at {g['threshold_macs_fraction_mean']:.4f} |"
            + (f" {g['random_skip_accuracy_mean']:.4f} at {g['random_skip_macs_fraction_mean']:.4f} |" if skips else "")
        )
    o = results["oracle"]
    lines.append(f"| {o['label']} (upper bound, uses labels) | – | – | {o['accuracy']:.4f} | {o['macs_fraction']:.4f} | – | – |" + dash)
    return "\n".join(lines)
