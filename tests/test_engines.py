"""Where trials run: the local engine and Ray give the same per-run figures (issue 15), and a local
pool's workers end with their parent."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from routing_env.cli import main

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the Ray engine is the optional extra routing-env[ray] (make test installs it)"
)


def sweep(out: Path, *engine: str) -> dict:
    """Two agents (a learned one and the threshold), one λ, two seeds: four trials, two per Ray worker."""
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce,threshold", "--lams", "0.1",
                 "--seeds", "0,1", "--steps", "400", "--out", str(out), "--quiet", *engine]) == 0
    return json.loads((out / "results.json").read_text())


@needs_ray
def test_a_ray_sweep_gives_the_local_engines_figures(tmp_path: Path) -> None:
    local = sweep(tmp_path / "local")
    on_ray = sweep(tmp_path / "ray", "--engine", "ray", "--workers", "2")
    assert len(on_ray["runs"]) == 4
    for a, b in zip(local["runs"], on_ray["runs"]):
        assert (a["agent"], a["lam"], a["seed"]) == (b["agent"], b["lam"], b["seed"])
        for key in ("accuracy", "macs_fraction", "reward_mean"):
            assert a["test"][key] == b["test"][key], (a["agent"], a["lam"], a["seed"], key)
    assert (tmp_path / "ray" / "pareto.png").stat().st_size > 0


@needs_ray
@pytest.mark.expensive  # two studies and a rerun on Ray: about a minute on a quiet 2-core VM; the default suite keeps
# the Ray sweep against the local engine (above) and an interrupted local study retraining only its
# unfinished trial (test_study)
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


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (exited, not yet reaped by whoever adopted it) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc (macOS): the signal check is all there is
    return state != "Z"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_sweeps_workers_do_not_outlive_it(tmp_path: Path) -> None:
    """``pkill`` on a sweep used to leave its pool workers running their trials as orphans."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from routing_env.experiments.engines import run_trials

        def trial(k):
            Path({str(tmp_path)!r}, f"worker-{{k}}").write_text(str(os.getpid()))
            time.sleep(120)

        if __name__ == "__main__":
            run_trials(trial, [0, 1], workers=2, progress=False)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("worker-*"))) < 2 or any(p.stat().st_size == 0 for p in tmp_path.glob("worker-*")):
            assert time.monotonic() < deadline and parent.poll() is None, "the workers never started"
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in tmp_path.glob("worker-*")]
        assert all(alive(pid) for pid in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers), f"workers {workers} outlived their killed parent"
