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


def test_bad_engines_are_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds", "0", "--steps", "10",
                 "--out", str(tmp_path / "x"), "--engine", "dask"]) == 2
    assert "unknown engine 'dask'" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds", "0", "--steps", "10",
                 "--out", str(tmp_path / "y"), "--address", "auto"]) == 2
    assert "needs --engine ray" in capsys.readouterr().err
