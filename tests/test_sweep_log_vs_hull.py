"""benchmarks/sweep_log_vs_hull.py: a sweep's logged test lines against another sweep's static hull."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_log_vs_hull.py"
HULL = [{"macs_fraction": 0.2, "accuracy": 0.80}, {"macs_fraction": 1.0, "accuracy": 0.90}]


def run(tmp_path: Path, lines: list[str]) -> subprocess.CompletedProcess:
    (tmp_path / "sweep.log").write_text("\n".join(["some progress bar", *lines]) + "\n")
    (tmp_path / "results.json").write_text(json.dumps({"static_hull": HULL}))
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "sweep.log"), str(tmp_path / "results.json")],
                          capture_output=True, text=True)


def line(seed: int, accuracy: float, cost: float) -> str:
    return f"ppo lam=0.1 seed={seed}: test accuracy {accuracy} at {cost} of the reference MACs"


def test_each_run_counts_once_and_is_measured_against_the_hull_at_its_own_cost(tmp_path: Path) -> None:
    done = run(tmp_path, [line(0, 0.86, 0.6), line(1, 0.84, 0.6), line(0, 0.86, 0.6)])  # seed 0 printed again on resume
    assert done.returncode == 0, done.stderr
    (group,) = json.loads(done.stdout)["groups"]
    assert group["seeds"] == [0, 1] and group["hull_accuracy_mean"] == pytest.approx(0.85)
    assert group["accuracy_minus_hull_mean"] == pytest.approx(0.0) and group["accuracy_minus_hull_std"] == pytest.approx(0.01)


def test_one_run_with_two_sets_of_figures_is_refused(tmp_path: Path) -> None:
    done = run(tmp_path, [line(0, 0.86, 0.6), line(0, 0.80, 0.5)])
    assert done.returncode != 0 and "seed 0 appears twice with different figures" in done.stderr
