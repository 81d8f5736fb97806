"""The confidence threshold chosen on ``val`` to reach a cascade member's ``val`` accuracy, scored on
``test``, as JSON: how to quote "the threshold matches ResNet-56" without reading a point off ``test``.

    python benchmarks/threshold_at_member.py [--backbone cifar10-resnet-cascade] [--member -1]

τ is the one, among every confidence seen on ``val``, with the least ``val`` MACs whose ``val`` accuracy
is at least the member's own ``val`` accuracy (the member alone, from the same cache). Seconds, offline
(the shipped feature caches).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from routing_env.agents.baselines import threshold_outcomes
from routing_env.evaluation import exit_table
from routing_env.experiments.train import evaluation_env
from routing_env.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cifar10-resnet-cascade")
    parser.add_argument("--member", type=int, default=-1, help="the member whose accuracy to reach (default: the last)")
    args = parser.parse_args()
    env_id, kwargs = "routing_env/Cascade-v0", {"backbone": args.backbone}
    val, test = (exit_table(evaluation_env(env_id, kwargs, split)) for split in ("val", "test"))
    member = args.member % val.correct.shape[0]
    target = float(val.correct[member].mean())
    best: tuple[float, float, float] | None = None
    for tau in np.unique(np.concatenate([val.confidence[:-1].ravel(), [1.0 + 1e-9]])):
        correct, cost = threshold_outcomes(val, float(tau))
        if correct.mean() >= target and (best is None or cost.mean() < best[2]):
            best = (float(tau), float(correct.mean()), float(cost.mean()))
    if best is None:
        raise SystemExit(f"no threshold reaches member {member}'s val accuracy {target:.4f}")
    correct, cost = threshold_outcomes(test, best[0])
    print(json.dumps({
        "backbone": args.backbone, "member": member, "member_val_accuracy": target,
        "member_test_accuracy": float(test.correct[member].mean()),
        "tau": best[0], "val_accuracy": best[1], "val_macs_fraction": best[2],
        "test_accuracy": float(correct.mean()), "test_macs_fraction": float(cost.mean()),
        "chosen_on": "val", "provenance": provenance(),
    }, indent=2))


if __name__ == "__main__":
    main()
