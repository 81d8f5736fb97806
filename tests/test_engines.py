"""Where trials run: the local engine and Ray give the same per-run figures (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routing_env.cli import main

ray = pytest.importorskip("ray", reason="the Ray engine is the optional extra routing-env[ray] (make test installs it)")


def sweep(out: Path, *engine: str) -> dict:
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce,threshold", "--lams", "0.03,0.1",
                 "--seeds", "0,1", "--steps", "400", "--out", str(out), "--quiet", *engine]) == 0
    return json.loads((out / "results.json").read_text())


def test_a_ray_sweep_gives_the_local_engines_figures(tmp_path: Path) -> None:
    local = sweep(tmp_path / "local")
    on_ray = sweep(tmp_path / "ray", "--engine", "ray", "--workers", "2")
    assert len(on_ray["runs"]) == 8
    for a, b in zip(local["runs"], on_ray["runs"]):
        assert (a["agent"], a["lam"], a["seed"]) == (b["agent"], b["lam"], b["seed"])
        for key in ("accuracy", "macs_fraction", "reward_mean"):
            assert a["test"][key] == b["test"][key], (a["agent"], a["lam"], a["seed"], key)
    assert (tmp_path / "ray" / "pareto.png").stat().st_size > 0


@pytest.mark.expensive  # two studies and a rerun on Ray: about a minute on a quiet 2-core VM
def test_a_ray_study_matches_the_local_one_and_a_rerun_reuses_its_trials(tmp_path: Path) -> None:
    def study(out: Path, *engine: str) -> dict:
        assert main(["study", "--backbone", "tiny-cascade", "--rewards", "accuracy,dense", "--agent", "reinforce",
                     "--lams", "0.05", "--seeds", "0,1", "--steps", "400", "--out", str(out), "--quiet", *engine]) == 0
        return json.loads((out / "study.json").read_text())

    local = study(tmp_path / "local")
    on_ray = study(tmp_path / "ray", "--engine", "ray", "--workers", "2")
    for reward in ("accuracy", "dense"):
        pairs = zip(local["rewards"][reward]["runs"], on_ray["rewards"][reward]["runs"])
        assert all(a["seed"] == b["seed"] and a["test"]["accuracy"] == b["test"]["accuracy"] for a, b in pairs), reward
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("runs/*/*/runs/*/test.json")}
    assert len(finished) == 4
    study(tmp_path / "ray", "--engine", "ray", "--workers", "2")  # resumed on Ray: every trial is read back
    assert {p: p.stat().st_mtime_ns for p in finished} == finished


def test_bad_engines_are_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds", "0", "--steps", "10",
                 "--out", str(tmp_path / "x"), "--engine", "dask"]) == 2
    assert "unknown engine 'dask'" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds", "0", "--steps", "10",
                 "--out", str(tmp_path / "y"), "--address", "auto"]) == 2
    assert "needs --engine ray" in capsys.readouterr().err
