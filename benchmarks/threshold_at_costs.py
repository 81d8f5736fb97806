"""The confidence threshold tuned on ``val`` to each target ``val`` cost, scored on ``test``, as JSON:
a cascade's threshold Pareto curve without reading any point off ``test``.

    python benchmarks/threshold_at_costs.py --backbone cifar10-resnet-cascade --targets 0.12,0.15,0.2,0.25,0.3

τ is the one with the best ``val`` accuracy whose ``val`` MACs fraction is within the target
(``routing_env.experiments.baselines.threshold_row``); each row keeps that τ's ``val`` accuracy and cost, so a
row whose ``val`` cost is under its target shows that no dearer τ was more accurate on ``val``. Seconds, offline for a shipped cascade (its
feature caches); a cascade packaged elsewhere is found with ``ROUTING_ENV_PRETRAINED``.
"""

from __future__ import annotations

import argparse
import json

from routing_env.experiments.baselines import threshold_row
from routing_env.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cifar10-resnet-cascade")
    parser.add_argument("--targets", default="0.12,0.15,0.2,0.25,0.3", help="val MACs fractions, comma-separated")
    args = parser.parse_args()
    rows = []
    for target in (float(t) for t in args.targets.split(",")):
        row = threshold_row("routing_env/Cascade-v0", {"backbone": args.backbone}, target, "test")
        rows.append({"val_target": target, "tau": row["tau"], "val_accuracy": row["val_accuracy"],
                     "val_macs_fraction": row["val_macs_fraction"], "test_accuracy": row["accuracy"],
                     "test_macs_fraction": row["macs_fraction"]})
    print(json.dumps({"backbone": args.backbone, "chosen_on": "val", "rows": rows, "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    main()
