"""The early-exit confidence threshold against the convex hull of a dynamic ResNet's static routes, as
JSON: where a rule with no learning already beats every mixture of fixed routes, a learned policy has a
point to reach.

    python benchmarks/threshold_vs_hull.py [--backbone cifar10-resnet20-dynamic] [--targets 0.5,0.6,0.7,0.8,0.9]

For each target cost, τ is chosen on ``val`` (the best ``val`` accuracy within that ``val`` MACs
fraction: agent ``threshold``, as the sweeps' "threshold at the same val cost" column) and the rule is
scored on ``test`` (each point keeps τ's ``val`` accuracy and cost too: what a rule set before a run
compares, since no choice is made on ``test``); the hull is that of the static routes on ``test`` (every exit at every width:
:func:`~routing_env.experiments.baselines.static_rows`), read at the rule's ``test`` cost. Needs CIFAR-10; minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json

from routing_env.experiments.baselines import hull_accuracy, static_hull, static_rows, threshold_row
from routing_env.provenance import provenance

ENV_ID = "routing_env/DynamicResNet-v0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cifar10-resnet20-dynamic")
    parser.add_argument("--targets", default="0.5,0.6,0.7,0.8,0.9", help="val MACs fractions to tune τ for")
    args = parser.parse_args()
    kwargs = {"backbone": args.backbone}
    hull = static_hull(static_rows(ENV_ID, kwargs))
    points = []
    for target in (float(t) for t in args.targets.split(",")):
        row = threshold_row(ENV_ID, kwargs, target)
        mixture = hull_accuracy(hull, row["macs_fraction"])
        points.append({
            "val_target_macs_fraction": target,
            "tau": row["tau"],
            "val_accuracy": row["val_accuracy"],
            "val_macs_fraction": row["val_macs_fraction"],
            "accuracy": row["accuracy"],
            "macs_fraction": row["macs_fraction"],
            "hull_accuracy": mixture,
            "above_hull": None if mixture is None else row["accuracy"] - mixture,
        })
    print(json.dumps({"backbone": args.backbone, "split": "test", "tuned_on": "val", "static_hull": hull,
                      "threshold": points, "provenance": provenance()}, indent=2))


if __name__ == "__main__":
    main()
