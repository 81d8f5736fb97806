"""benchmarks/cascade_vs_member.py: the tuned threshold against one network alone, with a paired interval."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_module
from routing_env.evaluation import paired_interval

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cascade_vs_member.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_each_row_is_the_val_tuned_threshold_against_the_member_alone() -> None:
    from routing_env.agents import make_agent
    from routing_env.evaluation import exit_table
    from routing_env.experiments.train import evaluation_env

    done = run("--backbone", "tiny-cascade", "--against", "tiny-cascade:0", "--targets", "0.3,0.6")
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    member = exit_table(evaluation_env("routing_env/Cascade-v0", {"backbone": "tiny-cascade"}, "test")).correct[0]
    assert measured["member_test_accuracy"] == pytest.approx(member.mean()) and measured["chosen_on"] == "val"
    val = evaluation_env("routing_env/Cascade-v0", {"backbone": "tiny-cascade"}, "val")
    for row in measured["rows"]:
        agent = make_agent("threshold", val, target_macs_fraction=row["val_target"])
        agent.learn(0)
        assert row["tau"] == pytest.approx(agent.tau)  # tuned on val, not test
        assert row["val_macs_fraction"] <= row["val_target"] or row["tau"] == 0.0
        assert row["minus_member_points"] == pytest.approx(100 * (row["test_accuracy"] - member.mean()))
        assert len(row["stop_shares"]) == 3 and sum(row["stop_shares"]) == pytest.approx(1.0)
        assert row["test_macs_over_member"] == pytest.approx(row["test_macs_fraction"] / measured["member_macs_fraction"], abs=1e-4)
        assert row["test_macs_over_member"] > row["test_macs_fraction"]  # member 0 is cheaper than the reference (the last)
        low, high = row["minus_member_points_95"]
        assert low <= row["minus_member_points"] <= high


def test_the_gain_rule_gives_a_row_per_fold_seed_each_the_val_fitted_agent_routed_on_test() -> None:
    from routing_env.agents import make_agent
    from routing_env.evaluation import exit_table, route_split
    from routing_env.experiments.train import evaluation_env

    done = run("--rule", "gain", "--seeds", "0,1", "--backbone", "tiny-cascade", "--against", "tiny-cascade:-1", "--targets", "0.5")
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["rule"] == "gain" and [r["fold_seed"] for r in measured["rows"]] == [0, 1]
    kwargs = {"backbone": "tiny-cascade", "obs_mode": "heads"}
    val, test = (evaluation_env("routing_env/Cascade-v0", kwargs, split) for split in ("val", "test"))
    member = exit_table(test).correct[-1]
    for row in measured["rows"]:
        agent = make_agent("gain", val, seed=row["fold_seed"], target_macs_fraction=0.5)
        agent.learn(0)
        records = route_split(agent, test)
        assert row["tau"] == pytest.approx(agent.tau) and row["alpha"] == pytest.approx(agent.alpha)
        assert row["test_accuracy"] == pytest.approx(records.correct.mean())
        assert row["test_macs_fraction"] == pytest.approx(records.macs_fraction.mean())
        on_val = route_split(agent, val)
        assert (row["val_accuracy"], row["val_macs_fraction"]) == pytest.approx((on_val.correct.mean(), on_val.macs_fraction.mean()))
        assert row["val_macs_fraction"] <= 0.5 + 1e-9  # fitted to the target on val
        shares = np.bincount(records.exit_position, minlength=3) / len(records.correct)
        assert row["stop_shares"] == pytest.approx(shares, abs=1e-4)
        assert row["minus_member_points"] == pytest.approx(100 * (records.correct.mean() - member.mean()), abs=1e-4)


@pytest.mark.parametrize(("against", "message"), [("tiny-cascade:7", r"tiny-cascade has 3 members.*got 7"),
                                                  ("tiny-cascade", "expected CASCADE:MEMBER"),
                                                  ("tiny-cascade:last", "MEMBER must be an integer index, got 'last'")])
def test_a_member_out_of_range_or_a_malformed_spec_is_refused_by_name(against: str, message: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """In the test's own process (a refusal needs no fresh interpreter): ``main`` exits with the message."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--backbone", "tiny-cascade", "--against", against])
    with pytest.raises(SystemExit, match=message):
        load_module(SCRIPT).main()


def test_the_paired_interval_is_tight_on_identical_outcomes_and_holds_a_known_lead() -> None:
    rng = np.random.default_rng(1)
    ours = rng.random(10_000) < 0.9
    assert paired_interval(ours, ours) == (0.0, 0.0)
    theirs = ours.copy()
    theirs[np.flatnonzero(ours)[:100]] = False  # we are right on 100 more images: +1.0 point
    low, high = paired_interval(ours, theirs)
    assert 0.0 < low < 1.0 < high < 2.0
