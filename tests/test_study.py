"""`routing-env study` (issue 14, part 3): the reward study's files, its figures on hand-made fronts and
curves, resuming, the process pool, budget targets, and grids refused before anything runs."""

from __future__ import annotations

import csv
import json
import operator
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

import routing_env.experiments.sweep as sweep_module
from routing_env.cli import main
from routing_env.experiments import (
    StudySpec,
    front_auc,
    hypervolume,
    pareto_front,
    run_study,
    run_trials,
    steps_to_reach,
)
from routing_env.experiments.study import RULES, smooth
from routing_env.rewards import REWARD_DESCRIPTIONS

ENV = "routing_env/Cascade-v0"
REWARDS = ("accuracy", "accuracy-margin-shaped")
LAMS = (0.05, 0.3)
STEPS = 2000


def small_study(**changes: Any) -> StudySpec:
    """2 rewards × 2 λ × 2 seeds × reinforce on tiny-cascade, 2000 steps a trial."""
    options = {"env_id": ENV, "env_kwargs": {"backbone": "tiny-cascade"}, "rewards": REWARDS, "agents": ("reinforce",),
               "seeds": (0, 1), "steps": STEPS, "lams": LAMS, **changes}
    return StudySpec(**options)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Runs in this process at one torch thread, as the pool's workers are (their figures then agree)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("study")
    return out, run_study(small_study(), out)


# --- figures on hand-made points ----------------------------------------------------------------------
FRONT = [(0.2, 0.5), (0.5, 0.8), (0.9, 0.9)]
"""(MACs fraction, accuracy) points none of which dominates another."""


def test_pareto_front_keeps_the_undominated_points_cheapest_first() -> None:
    dominated = [(0.6, 0.7), (0.5, 0.79), (0.95, 0.9), (0.5, 0.8)]  # below, as dear and worse, dearer and no better, repeated
    assert pareto_front([FRONT[2], *dominated, FRONT[0], FRONT[1]]) == FRONT
    assert pareto_front([]) == []


def test_hypervolume_of_hand_made_fronts() -> None:
    reference = (1.0, 0.0)
    area = 0.3 * 0.5 + 0.4 * 0.8 + 0.1 * 0.9  # the step curve's rectangles up to the reference cost
    assert hypervolume(FRONT, reference) == pytest.approx(area)
    assert hypervolume([*FRONT, (0.6, 0.7), (0.3, 0.1)], reference) == pytest.approx(area)  # dominated points add nothing
    assert hypervolume([*FRONT, (1.0, 0.99), (1.2, 1.0)], reference) == pytest.approx(area)  # nor points at or past the reference
    assert hypervolume([], reference) == 0.0
    assert hypervolume([(0.4, 0.6)], reference) == pytest.approx(0.6 * 0.6)
    assert hypervolume(FRONT, (1.0, 0.6)) == pytest.approx(0.4 * 0.2 + 0.1 * 0.3)  # the point below the reference accuracy drops
    assert hypervolume([*FRONT, (0.1, 0.95)], reference) == pytest.approx(0.9 * 0.95)  # one point dominating all


def test_front_auc_is_the_trapezoid_area_under_the_front() -> None:
    area = 0.3 * (0.5 + 0.8) / 2 + 0.4 * (0.8 + 0.9) / 2 + 0.1 * 0.9  # 0 below 0.2, lines between points, flat after 0.9
    assert front_auc(FRONT, 1.0) == pytest.approx(area)
    assert front_auc([*FRONT, (0.6, 0.7)], 1.0) == pytest.approx(area)
    assert front_auc(FRONT, 0.7) == pytest.approx(0.3 * (0.5 + 0.8) / 2 + 0.2 * (0.8 + 0.85) / 2)  # cut off inside a segment
    assert front_auc([], 1.0) == 0.0
    assert front_auc([(1.2, 0.9)], 1.0) == 0.0
    assert front_auc([(0.4, 0.6)], 1.0) == pytest.approx(hypervolume([(0.4, 0.6)], (1.0, 0.0)))  # one point: a rectangle
    assert front_auc(FRONT, 1.0) > hypervolume(FRONT, (1.0, 0.0))  # lines lie above the steps


def test_steps_to_reach_95_percent_of_the_rise_of_the_smoothed_return() -> None:
    steps = np.array([100, 200, 300, 400, 500])
    assert steps_to_reach(steps, np.array([0.0, 0.5, 0.9, 0.96, 1.0]), weight=0.0) == 400
    assert steps_to_reach(steps, np.array([-3.0, -2.0, -1.2, -1.04, -1.0]), weight=0.0) == 400  # negative returns too
    assert steps_to_reach(steps, np.array([1.0, 0.5, 0.2, 0.0, 0.0]), weight=0.0) == 400  # a fall is reached the same way
    assert steps_to_reach(steps, np.full(5, 0.7)) == 100  # flat: learned from the start
    assert steps_to_reach(steps[:0], np.zeros(0)) is None
    spike = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # one lucky batch early does not count once smoothed
    assert steps_to_reach(np.arange(8), spike, weight=0.0) == 1
    assert steps_to_reach(np.arange(8), spike, weight=0.6) == 7
    assert smooth(np.array([1.0, 0.0]), 0.6)[1] == pytest.approx(0.6)


# --- the study ----------------------------------------------------------------------------------------
def test_a_study_writes_its_files_with_the_expected_keys(study: tuple[Path, dict[str, Any]]) -> None:
    out, result = study
    assert json.loads((out / "study.json").read_text())["rewards"].keys() == set(REWARDS)
    assert result["knob"] == "lam" and result["rules"] == RULES
    assert result["reference"]["accuracy"] == 0.0
    costs = [r["test"]["macs_fraction"] for e in result["rewards"].values() for r in e["runs"]]
    assert result["reference"]["macs_fraction"] == pytest.approx(1.1 * max(costs))
    for reward, entry in result["rewards"].items():
        assert {"description", "source", "front", "hypervolume", "auc", "dominance", "steps_to_95", "seed_std_accuracy",
                "runs"} <= entry.keys()
        assert (entry["description"], entry["source"]) == REWARD_DESCRIPTIONS[reward]
        assert len(entry["runs"]) == 4 and len(entry["front"]) == 2
        assert {g["lam"] for g in entry["front"]} == set(LAMS)
        assert all({"accuracy_mean", "accuracy_std", "macs_fraction_mean", "macs_fraction_std"} <= g.keys() for g in entry["front"])
        hv = entry["hypervolume"]
        assert hv["per_seed"].keys() == {0, 1} and hv["mean"] == pytest.approx(np.mean(list(hv["per_seed"].values())))
        assert 0 < hv["mean"] <= result["reference"]["macs_fraction"]
        assert hv["std"] == pytest.approx(np.std(list(hv["per_seed"].values())))
        assert entry["auc"]["mean"] >= hv["mean"]  # a trapezoid curve lies above the step curve of the same front
        d = entry["dominance"]
        assert d["points"] == 2 and d["beats_threshold"] == sum(g["accuracy_minus_threshold_mean"] > 0 for g in entry["front"])
        margins = [r["test"]["accuracy"] - r["threshold_at_val_cost"]["accuracy"] for r in entry["runs"]]
        assert d["margin_mean"] == pytest.approx(np.mean(margins))
        assert 0 < entry["steps_to_95"]["mean"] <= STEPS + 16
        for r in entry["runs"]:
            assert r["reward"] == reward and r["setting"]["env_kwargs"]["reward"] == reward
            assert Path(r["run"]) == out / "runs" / reward / f"lam{r['lam']:g}" / "runs" / f"reinforce-lam{r['lam']:g}-seed{r['seed']}"
            assert isinstance(r["final_return"], float) and r["steps_to_95"] > 0
    with (out / "study.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {(r["reward"], float(r["value"]), int(r["seed"])) for r in rows} == {
        (reward, lam, seed) for reward in REWARDS for lam in LAMS for seed in (0, 1)}
    for row in rows:  # each trial's test reward, and its terms in their own columns, blank where its reward has none
        terms = {k.removeprefix("test_term_"): v for k, v in row.items() if k.startswith("test_term_")}
        assert set(terms) == {"correct", "compute", "shaping"}  # the union over the study's two rewards
        assert (terms["shaping"] == "") == (row["reward"] == "accuracy")  # blank where a trial's reward has no such term
        assert sum(float(v) for v in terms.values() if v) == pytest.approx(float(row["test_reward_mean"]))
    for entry in result["rewards"].values():
        for g in entry["front"]:
            assert sum(g["reward_terms_mean"].values()) == pytest.approx(g["reward_mean"])
    table = (out / "study.md").read_text()
    assert all(re.search(rf"^\| {reward} \| \d\.\d{{4}} ± \d\.\d{{4}} \|", table, re.M) for reward in REWARDS)
    for reward, entry in result["rewards"].items():  # every operating point has its row, with its mean accuracy
        for g in entry["front"]:
            assert f"| {reward} | reinforce | {g['lam']:g} | {g['accuracy_mean']:.4f} ± {g['accuracy_std']:.4f} |" in table
    for name in ("fronts.png", "learning_curves.png", "hypervolume.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_study_retrains_only_the_unfinished_trial(
    study: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, before = study
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/runs/*/test.json")}
    assert len(finished) == 8
    lost = out / "runs" / "accuracy-margin-shaped" / "lam0.3" / "runs" / "reinforce-lam0.3-seed1" / "test.json"
    lost.unlink()
    trained = []
    real = sweep_module.train_run

    def counting(env_id: str, env_kwargs: dict[str, Any], agent: str, agent_kwargs: dict, seed: int, *rest: Any, **kw: Any):
        trained.append((env_kwargs["reward"], env_kwargs["lam"], seed))
        return real(env_id, env_kwargs, agent, agent_kwargs, seed, *rest, **kw)

    monkeypatch.setattr(sweep_module, "train_run", counting)
    after = run_study(small_study(), out)
    assert trained == [("accuracy-margin-shaped", 0.3, 1)]
    assert {p: p.stat().st_mtime_ns for p in finished if p != lost} == {p: t for p, t in finished.items() if p != lost}
    assert lost.is_file()
    for reward in REWARDS:  # deterministic at one thread: the retrained trial lands where it was
        assert [r["test"] for r in after["rewards"][reward]["runs"]] == [r["test"] for r in before["rewards"][reward]["runs"]]


@pytest.mark.expensive  # a second study; the default suite keeps a pool of two spawned workers' trial order (below)
def test_two_workers_give_the_same_trials_as_one(study: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, serial = study
    out = tmp_path / "pool"
    assert main(["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--lams", "0.05,0.3", "--seeds", "1",
                 "--agent", "reinforce", "--steps", str(STEPS), "--workers", "2", "--out", str(out), "--quiet"]) == 0
    pooled = json.loads((out / "study.json").read_text())["rewards"]["accuracy"]["runs"]
    alone = [r for r in serial["rewards"]["accuracy"]["runs"] if r["seed"] == 1]
    assert [(r["lam"], r["seed"]) for r in pooled] == [(0.05, 1), (0.3, 1)]  # in trial order
    for a, b in zip(pooled, alone):
        assert a["test"] == b["test"] and a["threshold_at_val_cost"] == b["threshold_at_val_cost"]
        assert a["steps_to_95"] == b["steps_to_95"] and a["final_return"] == b["final_return"]


def test_run_trials_keeps_trial_order_and_raises_a_failed_trial() -> None:
    assert run_trials(operator.neg, [3, 1, 2], workers=1) == [-3, -1, -2]
    assert run_trials(operator.neg, [3, 1, 2, 5, 4], workers=2) == [-3, -1, -2, -5, -4]  # two spawned workers: trial order
    with pytest.raises(ValueError, match="invalid literal"):
        run_trials(int, ["1", "x", "2"], workers=2)
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        run_trials(operator.neg, [1], workers=0)


def test_a_target_study_prices_compute_by_dual_ascent_from_zero(tmp_path: Path, capsys: pytest.CaptureFixture, one_thread: None) -> None:
    out = tmp_path / "targets"
    assert main(["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--targets", "0.3,0.6", "--seeds", "0",
                 "--agent", "reinforce", "--steps", "3000", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("| reward | hypervolume |")
    result = json.loads((out / "study.json").read_text())
    entry = result["rewards"]["accuracy"]
    assert result["knob"] == "target_macs"
    assert sorted(g["target_macs"] for g in entry["front"]) == [0.3, 0.6] and all("lam" not in g for g in entry["front"])
    for r in entry["runs"]:
        config = json.loads((Path(r["run"]) / "config.json").read_text())
        assert config["env_kwargs"]["target_macs"] == r["target_macs"] and config["env_kwargs"]["lam"] == 0.0
        assert Path(r["run"]).parent.parent.name == f"target_macs{r['target_macs']:g}"
    with (out / "study.csv").open() as f:
        assert [(r["knob"], r["value"]) for r in csv.DictReader(f)] == [("target_macs", "0.3"), ("target_macs", "0.6")]
    for r in entry["runs"]:  # and the greedy policy calibrated on val to each budget
        c = r["test_calibrated"]
        assert c["target"] == r["target_macs"] and c["val_macs_fraction"] <= r["target_macs"] + 1e-9 and "bias" in c
    assert all("calibrated_macs_fraction_mean" in g for g in entry["front"])
    assert "| reward | agent | target | test MACs, as trained | test MACs, calibrated on val |" in (out / "study.md").read_text()


GRID = ["study", "--backbone", "tiny-cascade", "--agent", "reinforce", "--seeds", "0", "--steps", "100", "--quiet"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rewards", "accuracy,dense,nope", "--lams", "0.1"], r"unknown reward 'nope'"),
        (["--rewards", "accuracy", "--lams", "0.1", "--agent", "reinforce,nobody"], r"unknown agent 'nobody'"),
        (["--rewards", "accuracy", "--lams", "0.1", "--steps", "0"], r"steps must be a positive integer, got 0"),
        (["--rewards", "accuracy", "--lams", "0.1", "--targets", "0.5"], r"exactly one of --lams L,L .* or --targets F,F"),
        (["--rewards", "accuracy"], r"exactly one of --lams L,L .* or --targets F,F"),
        (["--rewards", ",", "--lams", "0.1"], r"--rewards ',' names no values"),
        (["--rewards", "accuracy", "--lams", "0.1,-0.2"], r"lam must be a finite number >= 0, got -0.2"),
        (["--rewards", "accuracy", "--targets", "0.5,0"], r"target_macs must be a finite number > 0, got 0.0"),
        (["--rewards", "accuracy", "--lams", "0.1", "--seeds", "0,1,0"], r"seeds \[0, 1, 0\] repeat \[0\]"),
        (["--rewards", "accuracy", "--lams", "0.1", "--env-kwargs", "reward=dense"], r"'reward'='dense': a study sets it per trial"),
        (["--rewards", "accuracy", "--lams", "0.1", "--env-kwargs", "colour=red"], r"unknown environment option\(s\) \['colour'\]"),
        (["--rewards", "accuracy", "--lams", "0.1", "--agent", "my.agents:A,my_agents:A"],
         r"agents \['my.agents:A', 'my_agents:A'\] are written to one folder \('my_agents_A-lam0-seed0'\)"),
        (["--rewards", "accuracy", "--lams", "0.1", "--backbone", "resnet9000"], r"unknown backbone 'resnet9000'"),
        (["--rewards", "accuracy", "--lams", "0.1", "--workers", "0"], r"workers must be an integer >= 1, got 0"),
    ],
)
def test_bad_grids_are_refused_before_any_trial_runs(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "study"
    assert main([*GRID, *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and re.search(message, lines[0]), captured.err
    assert not out.exists()


def test_two_rewards_spelt_to_one_folder_are_found() -> None:
    from routing_env.experiments.study import reward_folder, shared_folders

    assert reward_folder("pkg_a:r") == reward_folder("pkg:a_r") == "pkg_a_r"
    assert shared_folders(["pkg_a:r", "accuracy", "pkg:a_r"], reward_folder) == ["pkg:a_r", "pkg_a:r"]
    assert shared_folders(["accuracy", "dense"], reward_folder) == []
