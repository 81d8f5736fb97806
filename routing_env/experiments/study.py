"""Reward-shaping studies (issue 14): every reward spec × λ (or MACs target) × seed × agent trained on
``val`` as a sweep run and evaluated on ``test``; per reward, its test Pareto front, hypervolume, area
under the accuracy–cost curve, dominance over the threshold tuned on ``val``, learning speed and seed
variance, written to ``study.json``, ``study.csv``, ``study.md`` and three plots.

A trial is one :func:`~routing_env.experiments.sweep.sweep_run` in
``DIR/runs/<reward>/<knob><value>/runs/<agent>-lam<λ>-seed<seed>`` (``<knob>`` is ``lam`` or
``target_macs``; ``<reward>`` is the spec, parameters in brackets included, with a custom reward's ``:``
as ``_``, as a custom agent's is in its run name), so a finished trial is read back and an interrupted study resumes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .. import ENV_IDS
from ..backbones import backbone_names
from ..checkpoints import atomic_write_text, scalar_events, write_json
from ..env import EnvConfig
from ..provenance import provenance
from ..rewards import canonical_spec, describe, make_reward
from ..validation import check_number
from .engines import check_engine, run_trials
from .report import run_name, save_figure
from .sweep import SweepSpec, check_agents, group_runs, sweep_run
from .train import EarlyStopping, check_learning_split

Point = tuple[float, float]
"""``(macs_fraction, accuracy)``: cost first, as on the plots' x axis; accuracy is maximised, cost minimised."""

RETURN_TAG = "charts/episodic_return"
SMOOTHING = 0.6
"""The weight of the running value in the learning curves' exponential moving average (TensorBoard's default)."""
REACHED = 0.95
"""The share of the return's rise (first to last smoothed value) that counts as learned."""
REFERENCE_SLACK = 1.1
"""The hypervolume's reference cost is this times the largest test cost of any trial of the study."""

RULES = {
    "front": "per (agent, λ or target): mean ± std over seeds of test accuracy and test MACs fraction (policy network excluded)",
    "hypervolume": "area of the (test MACs fraction, test accuracy) region the reward's points of one seed (every λ or target, "
                   f"every agent) dominate, bounded by the reference point (accuracy 0, MACs fraction {REFERENCE_SLACK:g} × the "
                   "study's largest test cost); mean ± std over seeds",
    "auc": "area under the same seed's Pareto front as a trapezoid curve over [0, reference cost]: accuracy 0 below the "
           "cheapest point, straight lines between front points, flat after the dearest; mean ± std over seeds",
    "dominance": "of the (agent, λ or target) points, how many beat on test (mean over seeds) the confidence threshold tuned on val "
                 "to the policy's val cost; margin: mean test accuracy minus the threshold's, over points",
    "steps_to_95": f"instance-steps until the val return ({RETURN_TAG}, EMA-smoothed with weight {SMOOTHING:g}) first covers "
                   f"{REACHED:.0%} of its rise from the first to the last smoothed value; each seed's mean over its trials, "
                   "mean ± std over seeds",
    "seed_std_accuracy": "std over seeds of test accuracy, averaged over the (agent, λ or target) points",
}
"""What each figure of a study is; written into ``study.json`` and under the table of ``study.md``."""


@dataclass(frozen=True)
class StudySpec:
    """A reward-shaping study: every reward × knob value × seed × agent, each trained for ``steps``
    instance-steps on ``val``. The knob is either the price of compute (``lams``) or, exclusively, a
    budget (``targets``: environment option ``target_macs``, λ then adapts from 0 by dual ascent), so
    that rewards are compared at the same prices or at the same spending."""

    env_id: str
    env_kwargs: dict[str, Any]
    rewards: tuple[str, ...]
    agents: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    lams: tuple[float, ...] = ()
    targets: tuple[float, ...] = ()
    num_envs: int = 16
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    early_stopping: EarlyStopping | None = None

    @property
    def knob(self) -> str:
        """The environment option the study varies beside the reward: ``lam`` or ``target_macs``."""
        return "target_macs" if self.targets else "lam"

    @property
    def values(self) -> tuple[float, ...]:
        """The knob's values: ``targets`` if given, else ``lams``."""
        return self.targets or self.lams


@dataclass(frozen=True)
class Trial:
    """One point of a study's grid; picklable, so that an engine can run it in another process."""

    reward: str
    knob: str
    value: float
    agent: str
    seed: int

    @property
    def lam(self) -> float:
        """The environment's λ: the value itself, or 0 under a MACs target (where λ starts and then adapts)."""
        return self.value if self.knob == "lam" else 0.0


def study_trials(spec: StudySpec) -> list[Trial]:
    """The grid in the order the trials run: reward, then λ or target, then seed, then agent."""
    return [Trial(reward, spec.knob, value, agent, seed)
            for reward in spec.rewards for value in spec.values for seed in spec.seeds for agent in spec.agents]


def trial_sweep(spec: StudySpec, trial: Trial) -> SweepSpec:
    """The one-run sweep a trial is: the study's options with the trial's reward (and target) folded in."""
    env_kwargs = {**spec.env_kwargs, "reward": trial.reward}
    if trial.knob == "target_macs":
        env_kwargs["target_macs"] = trial.value
    return SweepSpec(spec.env_id, env_kwargs, (trial.agent,), (trial.lam,), (trial.seed,), spec.steps, spec.num_envs,
                     spec.agent_kwargs, spec.early_stopping)


def run_trial(spec: StudySpec, out: Path, trial: Trial) -> dict[str, Any]:
    """Train and evaluate one trial (its test figures, the threshold at its val cost), or read it back
    when it has finished before."""
    directory = out / "runs" / reward_folder(trial.reward) / f"{trial.knob}{trial.value:g}"
    return sweep_run(trial_sweep(spec, trial), trial.agent, trial.lam, trial.seed, directory)


def reward_folder(reward: str) -> str:
    """The folder of a reward's trials: its spec, ``:`` (a custom reward's ``module:name``) as ``_``."""
    return reward.replace(":", "_")


def shared_folders(values: Sequence[Any], folder: Callable[[Any], str]) -> list[Any]:
    """The ``values`` whose ``folder`` (the name that goes into a trial's path) another value has too:
    two rewards, agents, seeds or λ written as one."""
    folders = [folder(v) for v in values]
    return sorted({v for v, f in zip(values, folders) if folders.count(f) > 1}, key=str)


def check_study(spec: StudySpec) -> None:
    """Refuse a grid with a ``ValueError`` naming the bad value, before any trial runs (a mistake in
    the last reward must not cost the hours the first ones take)."""
    from routing_env.agents import check_comparable

    for name in ("rewards", "agents", "seeds"):
        if not getattr(spec, name):
            raise ValueError(f"a study needs at least one of {name}, got none")
    if bool(spec.lams) == bool(spec.targets):
        raise ValueError(f"a study varies either lams or targets (target_macs), not both nor neither; got lams={spec.lams}, "
                         f"targets={spec.targets}")
    for name in ("rewards", "agents", "seeds", "lams", "targets"):
        values = getattr(spec, name)
        repeated = shared_folders(values, lambda v: f"{v:g}" if isinstance(v, float) else str(v))  # as the run folders name them
        if repeated:
            raise ValueError(f"{name} {list(values)} repeat {repeated} (as the run folders name them)")
    for reward in spec.rewards:  # a known spec and parameters, or importable and a RewardFn: refused here, not in the first trial
        if not isinstance(reward, str):
            raise ValueError(f"a study's rewards are spec strings (each names its trials' folder and is kept in their "
                             f"config.json), got {reward!r}")
        if "/" in reward or "\\" in reward:
            raise ValueError(f"reward {reward!r} names a folder of the study, so it may not hold '/' or '\\'")
        make_reward(reward, 0.0)
    for name, values, folder in (("rewards", spec.rewards, reward_folder), ("agents", spec.agents, lambda a: run_name(a, 0.0, 0))):
        clash = shared_folders(values, folder)
        if clash:  # one trial's folder would hold the other's runs, found hours in or read back as its own
            raise ValueError(f"{name} {clash} are written to one folder ({folder(clash[0])!r}); rename one")
    canonical = [canonical_spec(r) for r in spec.rewards]
    same = sorted({r for r, c in zip(spec.rewards, canonical) if canonical.count(c) > 1})
    if same:
        raise ValueError(f"rewards {same} are one reward spelt two ways (parameters and their defaults compared)")
    for agent in spec.agents:
        check_comparable(agent)  # raises ValueError naming an unknown agent, or the oracle
    for seed in spec.seeds:
        check_number("seed", seed, low=0, integer=True)
    if isinstance(spec.steps, bool) or not isinstance(spec.steps, int) or spec.steps < 1:
        raise ValueError(f"steps must be a positive integer, got {spec.steps!r}")
    if isinstance(spec.num_envs, bool) or not isinstance(spec.num_envs, int) or spec.num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {spec.num_envs!r}")
    if spec.env_id not in ENV_IDS:
        raise ValueError(f"unknown environment id {spec.env_id!r}; expected one of {list(ENV_IDS)}")
    check_learning_split(spec.env_kwargs)
    if spec.early_stopping is not None:
        spec.early_stopping.check({"split": "val", **spec.env_kwargs})
    backbone = spec.env_kwargs.get("backbone")
    if backbone is not None and backbone not in backbone_names():
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {backbone_names()}")
    for option in ("reward", "lam", "target_macs"):
        if option in spec.env_kwargs:
            raise ValueError(f"environment option {option!r}={spec.env_kwargs[option]!r}: a study sets it per trial")
    for reward in spec.rewards:
        for value in spec.values:  # the environment's own checks: λ ≥ 0, target > 0, known options
            trial = Trial(reward, spec.knob, value, spec.agents[0], spec.seeds[0])
            EnvConfig.from_options({**trial_sweep(spec, trial).env_kwargs, "lam": trial.lam})
    first = Trial(spec.rewards[0], spec.knob, spec.values[0], spec.agents[0], spec.seeds[0])
    check_agents(replace(trial_sweep(spec, first), agents=spec.agents))  # an agent's options and observation, before any trial


# --- figures (pure) -----------------------------------------------------------------------------------
def pareto_front(points: Iterable[Point]) -> list[Point]:
    """The points no other point dominates (as cheap and as accurate, one of them strictly), cheapest first."""
    front: list[Point] = []
    for cost, accuracy in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((cost, accuracy))
    return front


def hypervolume(points: Iterable[Point], reference: Point) -> float:
    """The area of the region ``points`` dominate up to ``reference`` = (cost, accuracy): every
    (c, a) with ``p.cost ≤ c ≤ reference cost`` and ``reference accuracy ≤ a ≤ p.accuracy`` for some
    point p. One number that rewards both reach (more accurate) and spread (cheaper points) of a front;
    dominated points add nothing, nor do points at or beyond the reference; no points give 0."""
    ref_cost, ref_accuracy = reference
    front = [(c, a) for c, a in pareto_front(points) if c < ref_cost and a > ref_accuracy]
    ends = [c for c, _ in front[1:]] + [ref_cost]
    return float(sum((end - cost) * (accuracy - ref_accuracy) for (cost, accuracy), end in zip(front, ends)))


def front_auc(points: Iterable[Point], max_cost: float) -> float:
    """The area under the Pareto front of ``points`` as a trapezoid curve over ``[0, max_cost]``:
    accuracy 0 below the cheapest front point, straight lines between front points (what a random
    mixture of two neighbouring policies reaches), the dearest point's accuracy from it to ``max_cost``.
    Unlike the hypervolume (the same front as a step curve), it credits a front for how well its
    points can be mixed; no points give 0."""
    front = pareto_front(points)
    if not front or front[0][0] >= max_cost:
        return 0.0
    costs = np.array([c for c, _ in front])
    grid = np.append(costs[costs < max_cost], max_cost)
    accuracy = np.interp(grid, costs, [a for _, a in front])  # held flat after the dearest point
    return float(np.sum(np.diff(grid) * (accuracy[1:] + accuracy[:-1]) / 2))


def smooth(values: np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """The exponential moving average TensorBoard draws: ``s_t = weight·s_{t−1} + (1 − weight)·v_t``, ``s_0 = v_0``."""
    out = np.array(values, dtype=float)
    for t in range(1, len(out)):
        out[t] = weight * out[t - 1] + (1 - weight) * out[t]
    return out


def steps_to_reach(steps: np.ndarray, values: np.ndarray, share: float = REACHED, weight: float = SMOOTHING) -> int | None:
    """The first logged step at which the smoothed return (:func:`smooth`) has covered ``share`` of its
    way from its first value to its last (in either direction); the first step for a flat curve,
    ``None`` for an empty one.

    The share of the *rise*, not of the final value: returns can be negative (cross-entropy rewards),
    and a random policy may already earn most of the final return, so 95% of the final value is met
    at once or never. The light smoothing keeps one lucky batch of episodes from counting as learned."""
    if len(values) == 0:
        return None
    smoothed = smooth(values, weight)
    rise = smoothed[-1] - smoothed[0]
    if rise == 0:
        return int(steps[0])
    covered = (smoothed - smoothed[0]) / rise
    return int(steps[int(np.argmax(covered >= share))])


def mean_std(values: Iterable[float]) -> dict[str, float | None]:
    """Mean and (population) std, as :func:`~routing_env.experiments.sweep.group_runs` takes them; ``None`` for no values."""
    arr = np.array(list(values), dtype=float)
    if arr.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(arr.mean()), "std": float(arr.std())}


# --- from runs to figures -----------------------------------------------------------------------------
def read_returns(tb_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of every ``charts/episodic_return`` a run logged (no reservoir sampling);
    empty for an agent that logs none (a rule that does not learn)."""
    events = scalar_events(tb_dir, RETURN_TAG)
    return np.array([e.step for e in events], dtype=np.int64), np.array([e.value for e in events], dtype=float)


def study_run(trial: Trial, record: dict[str, Any], curve: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """A trial's sweep record with its reward, its knob value and its learning speed."""
    steps, values = curve
    return {
        **record,
        "reward": trial.reward,
        trial.knob: trial.value,
        "final_return": float(values[-1]) if len(values) else None,
        "steps_to_95": steps_to_reach(steps, values),
    }


def knob_groups(runs: Sequence[dict[str, Any]], knob: str) -> list[dict[str, Any]]:
    """:func:`group_runs` per (agent, λ) or, in a target study (every run starting from λ = 0), per
    (agent, target), the target under ``target_macs`` in place of ``lam``."""
    if knob == "lam":
        return group_runs(runs)
    groups = group_runs([{**r, "lam": r[knob]} for r in runs])
    return [{(knob if k == "lam" else k): v for k, v in g.items()} for g in groups]


def point_of(run: dict[str, Any]) -> Point:
    """A trial's test (MACs fraction, accuracy): the policy network's own MACs left out, as on the sweep's plots."""
    return run["test"]["macs_fraction"], run["test"]["accuracy"]


def per_seed(runs: Sequence[dict[str, Any]], figure: Callable[[list[dict[str, Any]]], float | None]) -> dict[int, float]:
    """``figure(runs of one seed)`` for each seed, leaving out the seeds where it is ``None``."""
    out = {}
    for seed in dict.fromkeys(r["seed"] for r in runs):
        value = figure([r for r in runs if r["seed"] == seed])
        if value is not None:
            out[seed] = value
    return out


def reward_summary(reward: str, runs: Sequence[dict[str, Any]], knob: str, reference: Point) -> dict[str, Any]:
    """The figures of one reward (:data:`RULES`) from its trials."""
    front = knob_groups(runs, knob)
    hypervolumes = per_seed(runs, lambda rs: hypervolume(map(point_of, rs), reference))
    aucs = per_seed(runs, lambda rs: front_auc(map(point_of, rs), reference[0]))
    speeds = per_seed(runs, lambda rs: mean_std(r["steps_to_95"] for r in rs if r["steps_to_95"] is not None)["mean"])
    margins = [g["accuracy_minus_threshold_mean"] for g in front]
    description, source = describe(reward)
    return {
        "description": description,
        "source": source,
        "front": front,
        "hypervolume": {**mean_std(hypervolumes.values()), "per_seed": hypervolumes},
        "auc": {**mean_std(aucs.values()), "per_seed": aucs},
        "dominance": {"beats_threshold": sum(m > 0 for m in margins), "points": len(margins),
                      "margin_mean": float(np.mean(margins))},
        "steps_to_95": {**mean_std(speeds.values()), "per_seed": speeds},
        "seed_std_accuracy": float(np.mean([g["accuracy_std"] for g in front])),
        "runs": list(runs),
    }


def run_study(
    spec: StudySpec, out: str | Path, workers: int = 1, progress: bool = False, engine: str = "local", address: str | None = None
) -> dict[str, Any]:
    """Check the grid, run every trial (finished ones are read back) on ``workers`` processes or Ray
    (:func:`~routing_env.experiments.engines.run_trials`, ``engine``, ``address``), and write ``study.json``, ``study.csv``,
    ``study.md``, ``fronts.png``, ``learning_curves.png`` and ``hypervolume.png`` under ``out``."""
    check_study(spec)
    check_engine(workers, engine, address)
    out = Path(out)
    trials = study_trials(spec)
    records = run_trials(partial(run_trial, spec, out), trials, workers, progress, engine, address)
    curves = [read_returns(Path(r["run"]) / "tb") for r in records]
    runs = [study_run(t, r, c) for t, r, c in zip(trials, records, curves)]
    reference = (REFERENCE_SLACK * max(point_of(r)[0] for r in runs), 0.0)
    study = {
        "spec": asdict(spec),
        "knob": spec.knob,
        "split": "test",
        "tuned_on": "val",
        "reference": {"macs_fraction": reference[0], "accuracy": reference[1]},
        "rules": RULES,
        "rewards": {reward: reward_summary(reward, [r for r in runs if r["reward"] == reward], spec.knob, reference)
                    for reward in spec.rewards},
        "provenance": provenance(),
    }
    write_json(out / "study.json", study)
    write_study_csv(out / "study.csv", study)
    atomic_write_text(out / "study.md", study_markdown(study))
    plot_fronts(out / "fronts.png", study)
    plot_learning_curves(out / "learning_curves.png", study, dict(zip((r["run"] for r in runs), curves)))
    plot_hypervolume(out / "hypervolume.png", study)
    return study


# --- files --------------------------------------------------------------------------------------------
CSV_COLUMNS = ("reward", "agent", "knob", "value", "seed", "val_accuracy", "val_macs_fraction", "test_accuracy",
               "test_macs_fraction", "test_macs_fraction_with_policy", "threshold_accuracy", "threshold_macs_fraction",
               "final_return", "steps_to_95", "run")


def write_study_csv(path: Path, study: dict[str, Any]) -> None:
    """One row per trial (:data:`CSV_COLUMNS`, then ``test_reward_mean`` and one ``test_term_<term>``
    per reward term any trial reports, blank where its reward has no such term); the threshold is the
    one tuned on val to the trial's val cost."""
    knob = study["knob"]
    runs = [(reward, r) for reward, entry in study["rewards"].items() for r in entry["runs"]]
    terms = list(dict.fromkeys(name for _, r in runs for name in r["test"].get("reward_terms_mean", {})))
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow([*CSV_COLUMNS, "test_reward_mean", *(f"test_term_{name}" for name in terms)])
    for reward, r in runs:
        t, v, thr = r["test"], r["val"], r["threshold_at_val_cost"]
        by_term = t.get("reward_terms_mean", {})
        w.writerow([reward, r["agent"], knob, r[knob], r["seed"], v["accuracy"], v["macs_fraction"], t["accuracy"],
                    t["macs_fraction"], t["macs_fraction_with_policy"], thr["accuracy"], thr["macs_fraction"],
                    r["final_return"], r["steps_to_95"], r["run"], t.get("reward_mean", ""),
                    *(by_term.get(name, "") for name in terms)])
    atomic_write_text(path, text.getvalue())


def _pm(figure: dict[str, Any], fmt: str) -> str:
    return "–" if figure["mean"] is None else f"{figure['mean']:{fmt}} ± {figure['std']:{fmt}}"


def rewards_markdown(study: dict[str, Any]) -> str:
    """The study's rewards as a Markdown table, one row each (:data:`RULES` says what each column is)."""
    lines = [
        "| reward | hypervolume | AUC | beat the threshold | margin over it | steps to 95% | seed std of accuracy | description |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for reward, e in study["rewards"].items():
        d = e["dominance"]
        lines.append(
            f"| {reward} | {_pm(e['hypervolume'], '.4f')} | {_pm(e['auc'], '.4f')} | {d['beats_threshold']}/{d['points']} | "
            f"{d['margin_mean']:+.4f} | {_pm(e['steps_to_95'], '.0f')} | {e['seed_std_accuracy']:.4f} | {e['description']} |"
        )
    return "\n".join(lines)


def fronts_markdown(study: dict[str, Any]) -> str:
    """Every (reward, agent, λ or target) point: test accuracy and MACs fraction, mean ± std over seeds,
    beside the threshold tuned on val to its val cost: the operating points the summary rows condense."""
    knob = study["knob"]
    lines = [f"| reward | agent | {'λ' if knob == 'lam' else 'target'} | test accuracy | test MACs fraction | threshold at the same val cost | margin |",
             "|---|---|---|---|---|---|---|"]
    for reward, e in study["rewards"].items():
        for g in sorted(e["front"], key=lambda g: (g["agent"], g[knob])):
            lines.append(
                f"| {reward} | {g['agent']} | {g[knob]:g} | {g['accuracy_mean']:.4f} ± {g['accuracy_std']:.4f} | "
                f"{g['macs_fraction_mean']:.3f} ± {g['macs_fraction_std']:.3f} | {g['threshold_accuracy_mean']:.4f} at "
                f"{g['threshold_macs_fraction_mean']:.3f} | {g['accuracy_minus_threshold_mean']:+.4f} |")
    return "\n".join(lines)


def budget_markdown(study: dict[str, Any]) -> str:
    """A target study's budgets: per (reward, agent, target) the greedy policy's test MACs fraction and
    accuracy as trained, and calibrated on val to the budget (``test_calibrated``), mean ± std over seeds."""
    if study["knob"] != "target_macs":
        return ""
    lines = ["| reward | agent | target | test MACs, as trained | test MACs, calibrated on val | accuracy, as trained | accuracy, calibrated |",
             "|---|---|---|---|---|---|---|"]
    for reward, e in study["rewards"].items():
        for g in sorted(e["front"], key=lambda g: (g["agent"], g["target_macs"])):
            if "calibrated_macs_fraction_mean" not in g:
                continue
            lines.append(
                f"| {reward} | {g['agent']} | {g['target_macs']:g} | {g['macs_fraction_mean']:.3f} ± {g['macs_fraction_std']:.3f} | "
                f"{g['calibrated_macs_fraction_mean']:.3f} ± {g['calibrated_macs_fraction_std']:.3f} | "
                f"{g['accuracy_mean']:.4f} ± {g['accuracy_std']:.4f} | {g['calibrated_accuracy_mean']:.4f} ± {g['calibrated_accuracy_std']:.4f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def study_markdown(study: dict[str, Any]) -> str:
    """``study.md``: the setting, the table of rewards, a target study's budgets, every operating point,
    what each figure is, and the plots."""
    spec, ref = study["spec"], study["reference"]
    values = ", ".join(f"{v:g}" for v in spec["targets"] or spec["lams"])
    return "\n".join([
        f"# Reward study: {spec['env_id']} {spec['env_kwargs'].get('backbone', '')}".rstrip(),
        "",
        f"Agents {', '.join(spec['agents'])}; {study['knob']} ∈ {{{values}}}; seeds {', '.join(map(str, spec['seeds']))}; "
        f"{spec['steps']} instance-steps per trial on val, scored on test. Hypervolume reference point: accuracy "
        f"{ref['accuracy']:g}, MACs fraction {ref['macs_fraction']:.4f}.",
        "",
        rewards_markdown(study),
        "",
        *([budget, ""] if (budget := budget_markdown(study)) else []),
        fronts_markdown(study),
        "",
        *(f"- **{name}**: {rule}" for name, rule in study["rules"].items()),
        "",
        "![test fronts](fronts.png) ![learning curves](learning_curves.png) ![hypervolume](hypervolume.png)",
        "",
    ])


# --- plots --------------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = "os^vD<>p"
"""One marker per agent on the fronts plot (colours are the rewards')."""


def plot_fronts(path: Path, study: dict[str, Any]) -> None:
    """Each reward's test front, mean ± std over seeds per (agent, λ or target), beside the thresholds
    tuned on val to each trial's val cost."""
    plt = _pyplot()
    knob = study["knob"]
    agents = study["spec"]["agents"]
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    thresholds = [r["threshold_at_val_cost"] for e in study["rewards"].values() for r in e["runs"]]
    ax.plot([t["macs_fraction"] for t in thresholds], [t["accuracy"] for t in thresholds], "x", color="0.55", ms=5,
            label="threshold tuned on val to a trial's val cost")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (reward, entry) in enumerate(study["rewards"].items()):
        for j, agent in enumerate(agents):
            groups = sorted((g for g in entry["front"] if g["agent"] == agent), key=lambda g: g["macs_fraction_mean"])
            ax.errorbar([g["macs_fraction_mean"] for g in groups], [g["accuracy_mean"] for g in groups],
                        xerr=[g["macs_fraction_std"] for g in groups], yerr=[g["accuracy_std"] for g in groups],
                        fmt=f"{MARKERS[j % len(MARKERS)]}-", color=colors[k % len(colors)], ms=5, capsize=2,
                        label=reward if len(agents) == 1 else f"{reward}, {agent}")
    ax.set_xlabel("mean MACs / reference MACs")
    ax.set_ylabel(f"accuracy on {study['split']}")
    ax.set_title(f"test fronts per reward (mean ± std over seeds; one point per {knob})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_learning_curves(path: Path, study: dict[str, Any], curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """One panel per reward: every trial's smoothed val return against instance-steps, coloured by its
    λ or target, with a dot where it reached 95% of its rise."""
    plt = _pyplot()
    knob = study["knob"]
    entries = list(study["rewards"].items())
    columns = min(len(entries), 3)
    rows = -(-len(entries) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), dpi=110, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    values = list(study["spec"]["targets"] or study["spec"]["lams"])
    for ax, (reward, entry) in zip(axes.flat, entries):
        labelled = set()
        for r in entry["runs"]:
            steps, returns = curves[r["run"]]
            if not len(returns):
                continue
            color = colors[values.index(r[knob]) % len(colors)]
            label = None if r[knob] in labelled else f"{knob} {r[knob]:g}"
            labelled.add(r[knob])
            smoothed = smooth(returns)
            ax.plot(steps, smoothed, color=color, lw=1, alpha=0.8, label=label)
            reached = r["steps_to_95"]
            ax.plot(reached, smoothed[list(steps).index(reached)], "o", color=color, ms=3)
        ax.set_title(reward, fontsize=9)
        ax.set_xlabel("instance-steps", fontsize=8)
        ax.set_ylabel("val return (smoothed)", fontsize=8)
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(entries):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_hypervolume(path: Path, study: dict[str, Any]) -> None:
    """Each reward's test hypervolume, mean with std over seeds as error bars."""
    plt = _pyplot()
    rewards = list(study["rewards"])
    figures = [study["rewards"][r]["hypervolume"] for r in rewards]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rewards) + 1.5), 3.8), dpi=120)
    ax.bar(range(len(rewards)), [f["mean"] for f in figures], yerr=[f["std"] for f in figures], capsize=4, color="tab:blue")
    ax.set_xticks(range(len(rewards)), rewards, rotation=30, ha="right", fontsize=8)
    ref = study["reference"]
    ax.set_ylabel(f"test hypervolume (ref: accuracy {ref['accuracy']:g}, MACs {ref['macs_fraction']:.3f})", fontsize=8)
    ax.set_title("hypervolume per reward (mean ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
