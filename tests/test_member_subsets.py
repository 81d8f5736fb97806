"""benchmarks/member_subsets.py: the threshold on every subset of a cascade's members, the subset chosen on val."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "member_subsets.py"


def test_the_whole_cascade_is_the_tuned_threshold_and_the_choice_is_made_on_val() -> None:
    from routing_env.experiments import threshold_row

    done = subprocess.run([sys.executable, str(SCRIPT), "--backbone", "tiny-cascade", "--targets", "0.3,0.6"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["chosen_on"] == "val" and len(measured["members"]) == 3
    for row in measured["rows"]:
        assert len(row["subsets"]) == 3  # {0, 2}, {1, 2}, {0, 1, 2}: every subset that keeps the last member
        assert all(s["members"][-1] == measured["members"][-1] for s in row["subsets"])
        whole = threshold_row("routing_env/Cascade-v0", {"backbone": "tiny-cascade"}, row["val_target"])
        assert row["full"]["tau"] == pytest.approx(whole["tau"])  # the whole cascade's row is the threshold agent's own
        assert (row["full"]["test_accuracy"], row["full"]["test_macs_fraction"]) == pytest.approx((whole["accuracy"], whole["macs_fraction"]))
        within = [s for s in row["subsets"] if s["val_macs_fraction"] <= row["val_target"]]
        chosen = row["chosen"]
        assert chosen["val_macs_fraction"] <= row["val_target"]
        assert chosen["val_accuracy"] == max(s["val_accuracy"] for s in within)  # the best on val, whatever test says
        assert chosen["minus_full_points"] == pytest.approx(100 * (chosen["test_accuracy"] - row["full"]["test_accuracy"]), abs=1e-3)
        low, high = chosen["minus_last_points_95"]
        assert low <= chosen["minus_last_points"] <= high


def test_a_subset_pays_only_its_own_members() -> None:
    from routing_env.evaluation import exit_table
    from routing_env.experiments.train import evaluation_env

    script = load_module(SCRIPT)
    env = evaluation_env("routing_env/Cascade-v0", {"backbone": "tiny-cascade"}, "test")
    table = exit_table(env)
    costs = script.member_costs(env.routing)
    np.testing.assert_allclose(table.macs_fraction, np.broadcast_to(np.cumsum(costs)[:, None], table.macs_fraction.shape),
                               rtol=1e-6)  # what the environment charges every instance
    assert costs[-1] == pytest.approx(1.0)  # the last is the reference
    skipped = script.subset_table(table, (0, 2), costs)
    assert skipped.macs_fraction[:, 0] == pytest.approx([costs[0], costs[0] + costs[2]])
    assert np.array_equal(skipped.correct, table.correct[[0, 2]]) and np.array_equal(skipped.confidence, table.confidence[[0, 2]])
    assert script.subsets(4) == [(0, 3), (1, 3), (2, 3), (0, 1, 3), (0, 2, 3), (1, 2, 3), (0, 1, 2, 3)]
    with pytest.raises(ValueError, match="member subsets need a cascade"):
        script.member_costs(evaluation_env("routing_env/DynamicResNet-v0", {"backbone": "tiny-dynamic-resnet"}, "test").routing)
