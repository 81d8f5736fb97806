"""The learned exit rule (``gain``: the predicted gain of going on, agents/gain.py) against the
confidence threshold, both tuned on ``val`` to each target ``val`` cost and scored on ``test``, over
seeds (the cross-fitting split that chooses the ridge penalty), as JSON:

    python benchmarks/gain_at_costs.py --backbone cifar10-resnet-cascade-5 --targets 0.15,0.2,0.25,0.3,0.35,0.4 --seeds 0,1,2
    ROUTING_ENV_DATA=.data python benchmarks/gain_at_costs.py --env routing_env/DynamicResNet-v0 \\
        --backbone cifar10-resnet20-dynamic-exits --targets 0.5,0.6,0.7

No operating point is read off ``test``: τ (of both rules) and the penalty are chosen on ``val``. Seconds
per target on a cached cascade; a dynamic ResNet routes each split once per head (minutes).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from agents import make_agent
from routing_env.experiments.baselines import threshold_row
from routing_env.experiments.train import evaluation_env, evaluation_json
from routing_env.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="routing_env/Cascade-v0")
    parser.add_argument("--backbone", default="cifar10-resnet-cascade-5")
    parser.add_argument("--targets", default="0.15,0.2,0.25,0.3,0.35,0.4", help="val MACs fractions, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    kwargs = {"backbone": args.backbone, "obs_mode": "heads"}
    val, test = evaluation_env(args.env, kwargs, "val"), evaluation_env(args.env, kwargs, "test")
    rows = []
    for target in (float(t) for t in args.targets.split(",")):
        threshold = threshold_row(args.env, kwargs, target, "test")
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            agent = make_agent("gain", val, seed=seed, target_macs_fraction=target)
            agent.learn(0)
            scored = evaluation_json(agent, test, args.env)
            runs.append({"seed": seed, "alpha": agent.alpha, "tau": agent.tau, "test_accuracy": scored["accuracy"],
                         "test_macs_fraction": scored["macs_fraction"], "macs_fraction_with_policy": scored["macs_fraction_with_policy"],
                         "policy_macs_per_decision": scored["policy_macs_per_decision"],
                         "minus_threshold_points": 100 * (scored["accuracy"] - threshold["accuracy"])})
        accuracy, cost = (np.array([r[k] for r in runs]) for k in ("test_accuracy", "test_macs_fraction"))
        diff = np.array([r["minus_threshold_points"] for r in runs])
        rows.append({"val_target": target,
                     "threshold": {"tau": threshold["tau"], "test_accuracy": threshold["accuracy"], "test_macs_fraction": threshold["macs_fraction"]},
                     "gain": {"test_accuracy_mean": float(accuracy.mean()), "test_accuracy_std": float(accuracy.std()),
                              "test_macs_fraction_mean": float(cost.mean()), "test_macs_fraction_std": float(cost.std()),
                              "minus_threshold_points_mean": float(diff.mean()), "minus_threshold_points_std": float(diff.std()),
                              "runs": runs}})
        print(f"val target {target}: threshold {threshold['accuracy']:.4f} at {threshold['macs_fraction']:.3f}, gain "
              f"{accuracy.mean():.4f} ± {accuracy.std():.4f} at {cost.mean():.3f} ({diff.mean():+.2f} ± {diff.std():.2f} points)",
              flush=True, file=__import__("sys").stderr)
    print(json.dumps({"env": args.env, "backbone": args.backbone, "chosen_on": "val", "std": "population (numpy default), over seeds",
                      "rows": rows, "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    main()
