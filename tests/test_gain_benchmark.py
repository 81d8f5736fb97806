"""benchmarks/gain_at_costs.py, the script behind the table in `docs/results.md` of the gain agent against the threshold."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gain_at_costs.py"


def run(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def measured() -> dict:
    return run("--backbone", "tiny-cascade", "--targets", "0.3,0.6", "--seeds", "0,1", "--curve")


def test_each_target_scores_both_rules_chosen_on_val(measured) -> None:
    assert measured["chosen_on"] == "val" and [r["val_target"] for r in measured["rows"]] == [0.3, 0.6]
    for row in measured["rows"]:
        threshold, runs = row["threshold"], row["gain"]["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            assert r["minus_threshold_points"] == pytest.approx(100 * (r["test_accuracy"] - threshold["test_accuracy"]))
            assert r["minus_threshold_curve_points"] == pytest.approx(100 * (r["test_accuracy"] - r["threshold_curve_at_same_test_cost"]))
            assert r["macs_fraction_with_policy"] >= r["test_macs_fraction"] and r["policy_macs_per_decision"] > 0
            low, high = r["minus_threshold_points_95"]
            assert low <= r["minus_threshold_points"] <= high  # the paired bootstrap's interval holds the lead
        assert row["gain"]["test_accuracy_mean"] == pytest.approx(sum(r["test_accuracy"] for r in runs) / 2)


def test_both_rules_are_the_ones_tuned_on_val(measured) -> None:
    """Each row's τ (both rules) and ridge penalty are what tuning on ``val`` gives, not ``test``."""
    from routing_env.agents import make_agent
    from routing_env.experiments.train import evaluation_env

    val = evaluation_env("routing_env/Cascade-v0", {"backbone": "tiny-cascade", "obs_mode": "heads"}, "val")
    for row in measured["rows"]:
        rule = make_agent("threshold", val, target_macs_fraction=row["val_target"])
        rule.learn(0)
        assert row["threshold"]["tau"] == pytest.approx(rule.tau)
        for r in row["gain"]["runs"]:
            agent = make_agent("gain", val, seed=r["seed"], target_macs_fraction=row["val_target"])
            agent.learn(0)
            assert (r["tau"], r["alpha"]) == pytest.approx((agent.tau, agent.alpha))


def test_merging_outputs_averages_over_backbones(measured, tmp_path) -> None:
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p in paths:
        p.write_text(json.dumps(measured))
    merged = run("--merge", *map(str, paths))
    for row, source in zip(merged["rows"], measured["rows"]):
        assert row["gain_test_accuracy"]["mean"] == pytest.approx(source["gain"]["test_accuracy_mean"])
        assert row["gain_test_accuracy"]["std"] == 0.0 and len(row["gain_test_accuracy"]["each"]) == 2
    other = dict(measured, rows=measured["rows"][::-1])
    paths[1].write_text(json.dumps(other))
    with pytest.raises(subprocess.CalledProcessError):
        run("--merge", *map(str, paths))  # the targets differ: refused


def test_a_dynamic_resnet_is_compared_with_its_static_routes_hull() -> None:
    measured = run("--env", "routing_env/DynamicResNet-v0", "--backbone", "tiny-dynamic-resnet", "--targets", "0.7",
                   "--seeds", "0", "--hull")
    hull, row = measured["static_hull"], measured["rows"][0]
    assert hull and all(a["macs_fraction"] < b["macs_fraction"] for a, b in zip(hull, hull[1:]))
    from routing_env.experiments.baselines import hull_accuracy

    run_, threshold = row["gain"]["runs"][0], row["threshold"]
    assert hull[0]["macs_fraction"] < min(run_["test_macs_fraction"], threshold["test_macs_fraction"])  # so the hull is read at both
    assert run_["hull_accuracy"] == pytest.approx(hull_accuracy(hull, run_["test_macs_fraction"]))
    assert run_["minus_hull_points"] == pytest.approx(100 * (run_["test_accuracy"] - run_["hull_accuracy"]))
    assert row["gain"]["minus_hull_points_mean"] == pytest.approx(run_["minus_hull_points"])
    mixture = hull_accuracy(hull, threshold["test_macs_fraction"])
    assert threshold["minus_hull_points"] == pytest.approx(100 * (threshold["test_accuracy"] - mixture))
