"""Sweeps: every agent × λ × seed trained on ``val`` and evaluated on ``test`` beside the baselines,
into a Pareto front (docs/design.md §10). Policies (and the threshold's τ) are always tuned on ``val``;
``test`` is only evaluated, and a co-trained run only on its own saved backbone, frozen.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..checkpoints import read_json, write_json
from ..env import EnvConfig, build_backbone
from ..provenance import provenance
from ..rewards import reward_fingerprint
from ..validation import check_number
from .baselines import calibrated_row, hull_accuracy, oracle_row, random_skip_row, static_hull, static_rows, threshold_curve, threshold_row
from .engines import check_engine, run_trials
from .report import plot_pareto, run_name, write_pareto_csv
from .train import EarlyStopping, check_learning_split, evaluation_env, evaluation_json, make_vector_env, train_run


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
    early_stopping: EarlyStopping | None = None
    """Keep each run's best policy on ``val-holdout`` (:class:`~routing_env.experiments.train.EarlyStopping`)."""


def sweep_run(spec: SweepSpec, agent: str, lam: float, seed: int, out: Path, progress: bool = False) -> dict[str, Any]:
    """Train one policy on ``val`` (or the split in ``env_kwargs``) and evaluate it on ``test`` beside the
    threshold tuned on ``val`` to its ``val`` cost and random skipping at that cost (a policy trained on
    another split, e.g. ``val-aug``, is scored on plain ``val`` for that cost; ``val.trained_on`` keeps
    its figures on the training split), all on the run's own backbone (a co-trained
    run's saved one), frozen; a run whose ``test.json`` exists is read back instead (sweeps resume)."""
    directory = out / "runs" / run_name(agent, lam, seed)
    done = directory / "test.json"
    env_kwargs = {**spec.env_kwargs, "lam": lam}
    # the weights by content: a model re-packaged under the same name, or a rewritten backbone_weights
    # file, must not reuse runs trained on the old one beside baselines measured on the new one
    weights = build_backbone(EnvConfig.from_options(env_kwargs)).weights_sha256
    setting = {"env": spec.env_id, "env_kwargs": spec.env_kwargs, "steps": spec.steps, "num_envs": spec.num_envs,
               "agent_kwargs": spec.agent_kwargs, "backbone_sha256": weights,
               **reward_fingerprint(spec.env_kwargs.get("reward")),  # a reward of one's own by content too
               **({"early_stopping": asdict(spec.early_stopping)} if spec.early_stopping is not None else {})}
    if done.is_file():
        record = read_json(done)
        stored = (record.get("setting"), record.get("agent"), record.get("lam"), record.get("seed"))
        if stored != (json.loads(json.dumps(setting)), agent, lam, seed):  # as stored: tuples read back as lists
            raise ValueError(f"{done} was made with {stored[0]} ({stored[1]}, λ {stored[2]}, seed {stored[3]}), not {setting} "
                             f"({agent}, λ {lam}, seed {seed}): choose another --out")
        return record
    policy, val_result = train_run(
        spec.env_id, env_kwargs, agent, spec.agent_kwargs, seed, spec.steps, spec.num_envs, directory, progress, spec.early_stopping
    )
    from routing_env.agents import load_agent

    if env_kwargs.get("split", "val") != "val":
        # trained on another split (e.g. val-aug): the baselines are matched to the policy's cost on plain val
        val_env = evaluation_env(spec.env_id, env_kwargs, "val", run=directory)
        val_result = {**evaluation_json(load_agent(directory, val_env, allow_code=":" in agent), val_env, spec.env_id),
                      "trained_on": val_result}
    test_env = evaluation_env(spec.env_id, env_kwargs, "test", run=directory)
    cost = val_result["macs_fraction"]
    policy = load_agent(directory, test_env, allow_code=":" in agent)  # as `evaluate --run` does: a stochastic policy starts afresh
    record = {
        "setting": setting,
        "agent": agent,
        "lam": lam,
        "seed": seed,
        "run": str(directory),
        "val": val_result,
        "test": evaluation_json(policy, test_env, spec.env_id),
        "threshold_at_val_cost": threshold_row(spec.env_id, env_kwargs, cost, run=directory),
        "random_skip_at_val_cost": random_skip_row(spec.env_id, env_kwargs, cost, run=directory),
    }
    target = env_kwargs.get("target_macs")
    if target is not None and env_kwargs.get("cost", "macs") == "macs" and hasattr(policy, "policy_module"):
        record["test_calibrated"] = calibrated_row(spec.env_id, env_kwargs, directory, agent, target)
    write_json(done, record)
    return record


def group_runs(records: Sequence[dict[str, Any]], hull: list[dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Mean ± std over seeds of each (agent, λ) on ``test``, with the matched-cost threshold and, given
    the static routes' ``hull`` (:func:`static_hull`), the best mixture of static routes at the same
    ``test`` cost."""
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
            "val_accuracy_mean": float(np.mean([r["val"]["accuracy"] for r in runs])),
            "val_macs_fraction_mean": float(np.mean([r["val"]["macs_fraction"] for r in runs])),
            # each co-trained seed has its own backbone, so its own reference: their mean (one value when frozen)
            "val_reference_accuracy": float(np.mean([r["val"]["reference_accuracy"] for r in runs])),
            "reference_accuracy": float(np.mean([r["test"]["reference_accuracy"] for r in runs])),
        })
        if all("reward_mean" in r["test"] for r in runs):  # a record made by hand (or by other code) may lack it
            rows[-1]["reward_mean"] = float(np.mean([r["test"]["reward_mean"] for r in runs]))
        terms = [r["test"].get("reward_terms_mean") for r in runs]
        if all(t is not None for t in terms):  # runs evaluated before 0.4.0's reward_terms_mean lack them
            names = dict.fromkeys(name for t in terms for name in t)  # one reward's terms: the same names in every run
            rows[-1]["reward_terms_mean"] = {name: float(np.mean([t.get(name, 0.0) for t in terms])) for name in names}
        calibrated = [r.get("test_calibrated") for r in runs]
        if all(c is not None for c in calibrated):  # target_macs runs: the greedy policy calibrated to the budget on val
            for key in ("accuracy", "macs_fraction"):
                values = np.array([c[key] for c in calibrated])
                rows[-1][f"calibrated_{key}_mean"], rows[-1][f"calibrated_{key}_std"] = float(values.mean()), float(values.std())
        skips = [r.get("random_skip_at_val_cost") for r in runs]
        if all(s is not None for s in skips):
            rows[-1]["random_skip_accuracy_mean"] = float(np.mean([s["accuracy"] for s in skips]))
            rows[-1]["random_skip_macs_fraction_mean"] = float(np.mean([s["macs_fraction"] for s in skips]))
        if hull:
            at_cost = [hull_accuracy(hull, f) for f in frac]
            if all(a is not None for a in at_cost):
                margin = acc - np.array(at_cost, dtype=float)
                rows[-1]["hull_accuracy_mean"] = float(np.mean(at_cost))
                rows[-1]["accuracy_minus_hull_mean"] = float(margin.mean())
                rows[-1]["accuracy_minus_hull_std"] = float(margin.std())
    return rows


def reaching_reference(groups: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The (agent, λ) chosen on ``val`` to match the reference network: the cheapest on ``val`` whose mean
    ``val`` accuracy reaches the reference's ``val`` accuracy, if any. The reference is each run's
    ``reference_accuracy``, the widest path the environment offers (the full network unless ``widths``
    leaves the full width out; co-trained seeds, each its own backbone, by their mean). Its ``test`` figures are what to
    report; choosing on ``test`` would pick the seeds' luckiest point."""
    reached = [g for g in groups if g["val_accuracy_mean"] >= g["val_reference_accuracy"]]
    return min(reached, key=lambda g: g["val_macs_fraction_mean"]) if reached else None


def check_sweep(spec: SweepSpec) -> None:
    """Refuse a sweep with a ``ValueError`` naming the bad value before any run trains: every agent,
    every λ with the environment options, the steps (a typo in the last agent must not surface after
    the first runs have trained)."""
    from routing_env.agents import check_comparable

    if not spec.agents or not spec.lams or not spec.seeds:
        raise ValueError(f"a sweep needs agents, lams and seeds, got {spec.agents}, {spec.lams} and {spec.seeds}")
    names = [run_name(a, lam, s) for a in spec.agents for lam in spec.lams for s in spec.seeds]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # two trials in one folder: the later would read the first one's results back as its own
        raise ValueError(f"agents {list(spec.agents)}, lams {list(spec.lams)} and seeds {list(spec.seeds)} repeat the runs "
                         f"{repeated} (as the run folders name them, λ to 6 significant digits)")
    for agent in spec.agents:
        check_comparable(agent)
    for seed in spec.seeds:
        check_number("seed", seed, low=0, integer=True)
    for lam in spec.lams:
        EnvConfig.from_options({k: v for k, v in {**spec.env_kwargs, "lam": lam}.items() if k != "backbone_weights"})
    if isinstance(spec.steps, bool) or not isinstance(spec.steps, int) or spec.steps < 0 or spec.num_envs < 1:
        raise ValueError(f"a sweep needs steps >= 0 and num_envs >= 1, got {spec.steps!r} and {spec.num_envs!r}")
    check_learning_split(spec.env_kwargs)
    if spec.early_stopping is not None:
        spec.early_stopping.check({"split": "val", **spec.env_kwargs})
    check_agents(spec)


def check_agents(spec: SweepSpec) -> None:
    """Make every agent once with the sweep's agent options, on the environment its runs learn in (the
    first λ): a value an agent refuses, or an observation it cannot read (``gain`` without
    ``obs_mode="heads"``), fails here, before the output folder is written, as ``train`` fails before it
    writes anything. Nothing learns; the environment and agents are dropped."""
    from routing_env.agents import make_agent

    env = make_vector_env(spec.env_id, spec.num_envs, **{"split": "val", **spec.env_kwargs, "lam": spec.lams[0]})
    try:
        for agent in spec.agents:
            make_agent(agent, env, seed=spec.seeds[0], **spec.agent_kwargs)
    finally:
        env.close()


def _sweep_trial(spec: SweepSpec, out: Path, progress: bool, trial: tuple[str, float, int]) -> dict[str, Any]:
    agent, lam, seed = trial
    return sweep_run(spec, agent, lam, seed, out, progress)


def run_sweep(
    spec: SweepSpec, out: str | Path, progress: bool = False, workers: int = 1, engine: str = "local", address: str | None = None
) -> dict[str, Any]:
    """Every run of ``spec`` (resuming finished ones), the baselines on ``test``, and the Pareto files:
    ``results.json``, ``pareto.csv``, ``pareto.png``. The sweep-wide baselines (static routes, oracle,
    threshold curve) use the backbone as given (before any co-training), frozen. The whole grid is
    checked first (:func:`check_sweep`); the runs go through :func:`~routing_env.experiments.engines.run_trials`
    (``workers``, ``engine="local"`` or ``"ray"``, a Ray cluster's ``address``)."""
    check_sweep(spec)
    check_engine(workers, engine, address)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = [(agent, lam, seed) for agent in spec.agents for lam in spec.lams for seed in spec.seeds]
    records = run_trials(partial(_sweep_trial, spec, out, progress and workers == 1 and engine == "local"), trials, workers,
                         progress, engine, address)
    for (agent, lam, seed), record in zip(trials, records):
        t = record["test"]
        print(f"{agent} lam={lam:g} seed={seed}: test accuracy {t['accuracy']:.4f} at {t['macs_fraction']:.4f} "
              f"of the reference MACs", file=sys.stderr, flush=True)
    singles = static_rows(spec.env_id, spec.env_kwargs)
    # a co-trained run is scored on its own backbone: the original's static routes are no reference for it
    hull = None if spec.env_kwargs.get("train_backbone") else static_hull(singles)
    groups = group_runs(records, hull)
    results = {
        "spec": asdict(spec),
        "split": "test",
        "tuned_on": "val",
        "unit": "MACs (multiply-accumulates); fractions of the reference (a cascade's largest member, a dynamic ResNet's full network)",
        "singles": singles,
        "static_hull": hull,
        "oracle": oracle_row(spec.env_id, spec.env_kwargs),
        "threshold_curve": threshold_curve(spec.env_id, spec.env_kwargs),
        "groups": groups,
        "reaching_reference": reaching_reference(groups),
        "runs": records,
        "provenance": provenance(),
    }
    write_json(out / "results.json", results)
    write_pareto_csv(out / "pareto.csv", results)
    plot_pareto(out / "pareto.png", results, title=f"{spec.env_id} {spec.env_kwargs.get('backbone', '')}".strip())
    return results
