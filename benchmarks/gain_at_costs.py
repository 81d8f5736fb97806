"""The learned exit rule (``gain``: the predicted gain of going on, routing_env/agents/gain.py) against the
confidence threshold, both tuned on ``val`` to each target ``val`` cost and scored on ``test``, over
seeds (the cross-fitting split that chooses the ridge penalty), as JSON:

    python benchmarks/gain_at_costs.py --backbone cifar10-resnet-cascade-5 --targets 0.15,0.2,0.25,0.3,0.35,0.4 --seeds 0,1,2 --curve
    ROUTING_ENV_DATA=.data python benchmarks/gain_at_costs.py --env routing_env/DynamicResNet-v0 \\
        --backbone cifar10-resnet20-dynamic-exits --targets 0.5,0.6,0.7 --hull

No operating point is read off ``test``: τ (of both rules) and the penalty are chosen on ``val``. Each
run's lead over the threshold has a 95% interval from a paired bootstrap over the ``test`` images
(:func:`paired_interval`): the spread over fold seeds is not an uncertainty, since every seed is fitted
on the same ``val`` and scored on the same ``test``. With
``--curve`` each run is also compared with the threshold's best ``test`` accuracy at its ``test`` cost
(:func:`best_below`, 401 τ from the ``val`` quantiles); with ``--hull`` (a dynamic ResNet) each run is also compared with the convex hull of the backbone's static
routes on ``test`` at its ``test`` cost (``benchmarks/threshold_vs_hull.py``'s hull, of every exit at every
width; the output's ``static_hull`` is read on ``test``, a reference, never an operating point). Seconds per target on a cached cascade; a dynamic ResNet
routes each split once per head (minutes). ``--merge`` averages outputs over backbone seeds:

    python benchmarks/gain_at_costs.py --merge benchmarks/results/cifar10-resnet-cascade-5-joint/{,seed1/,seed2/}gain-at-costs.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from routing_env.agents import make_agent
from routing_env.evaluation import paired_interval, route_split, summarize
from routing_env.experiments.baselines import hull_accuracy, static_hull, static_rows, threshold_curve
from routing_env.experiments.train import evaluation_env
from routing_env.provenance import provenance


def scored(agent: object, test: object) -> tuple[dict, np.ndarray]:
    """The agent's evaluation on ``test`` (accuracy, cost, policy MACs) and its per-image correctness."""
    records = route_split(agent, test)
    return summarize(records, test, agent.policy_macs()), records.correct


def best_below(curve: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """The threshold's ``test`` curve as (costs, the best accuracy at that cost or less): a reference at a
    rule's own ``test`` cost that favours the threshold (its best τ there, read off ``test``), never an
    operating point."""
    costs = np.array([p["macs_fraction"] for p in curve])
    return costs, np.maximum.accumulate(np.array([p["accuracy"] for p in curve]))


def merged(paths: list[str]) -> dict[str, object]:
    """Several outputs of this script, one per backbone seed (the same targets), as per target the mean
    ± std over the backbones of each one's figures (the rule's accuracy, cost and leads are the means
    over its fold seeds): the spread a backbone's training seed adds."""
    outputs = [json.loads(open(p).read()) for p in paths]
    rows = []
    for i, row in enumerate(outputs[0]["rows"]):
        per = [o["rows"][i] for o in outputs]
        if any(r["val_target"] != row["val_target"] for r in per):
            raise ValueError(f"{paths}: the outputs' targets differ at row {i}")
        values = {"threshold_test_accuracy": [r["threshold"]["test_accuracy"] for r in per],
                  "threshold_test_macs_fraction": [r["threshold"]["test_macs_fraction"] for r in per],
                  "gain_test_accuracy": [r["gain"]["test_accuracy_mean"] for r in per],
                  "gain_test_macs_fraction": [r["gain"]["test_macs_fraction_mean"] for r in per],
                  "gain_minus_threshold_points": [r["gain"]["minus_threshold_points_mean"] for r in per]}
        intervals = [r["gain"]["runs"][0].get("minus_threshold_points_95") for r in per]
        first_seed = {"gain_minus_threshold_points_95_first_seed": intervals} if None not in intervals else {}
        if all("minus_threshold_curve_points_mean" in r["gain"] for r in per):
            values["gain_minus_threshold_curve_points"] = [r["gain"]["minus_threshold_curve_points_mean"] for r in per]
        rows.append({"val_target": row["val_target"], **{k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "each": v}
                                                         for k, v in values.items()}, **first_seed})
    return {"merged": paths, "backbones": [o["backbone"] for o in outputs], "std": "population, over the backbones", "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="routing_env/Cascade-v0")
    parser.add_argument("--backbone", default="cifar10-resnet-cascade-5")
    parser.add_argument("--targets", default="0.15,0.2,0.25,0.3,0.35,0.4", help="val MACs fractions, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--hull", action="store_true", help="compare with the static routes' convex hull on test (a dynamic ResNet)")
    parser.add_argument("--curve", action="store_true", help="compare with the threshold's whole test curve at each run's test cost")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="measure nothing: merge outputs of this script, one per backbone seed")
    args = parser.parse_args()
    if args.merge:
        print(json.dumps({**merged(args.merge), "provenance": provenance()}, indent=1))
        return
    kwargs = {"backbone": args.backbone, "obs_mode": "heads"}
    hull = static_hull(static_rows(args.env, {"backbone": args.backbone})) if args.hull else None
    curve = best_below(threshold_curve(args.env, kwargs, points=401, split="test")) if args.curve else None
    val, test = evaluation_env(args.env, kwargs, "val"), evaluation_env(args.env, kwargs, "test")
    rows = []
    for target in (float(t) for t in args.targets.split(",")):
        rule = make_agent("threshold", val, target_macs_fraction=target)  # as experiments.threshold_row tunes it
        rule.learn(0)
        threshold, threshold_correct = scored(rule, test)
        threshold["tau"] = rule.tau
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            agent = make_agent("gain", val, seed=seed, target_macs_fraction=target)
            agent.learn(0)
            result, correct = scored(agent, test)
            runs.append({"seed": seed, "alpha": agent.alpha, "tau": agent.tau, "test_accuracy": result["accuracy"],
                         "test_macs_fraction": result["macs_fraction"], "macs_fraction_with_policy": result["macs_fraction_with_policy"],
                         "policy_macs_per_decision": result["policy_macs_per_decision"],
                         "minus_threshold_points": 100 * (result["accuracy"] - threshold["accuracy"]),
                         "minus_threshold_points_95": paired_interval(correct, threshold_correct)})
            if curve is not None:
                reference = float(np.interp(result["macs_fraction"], *curve))
                runs[-1].update(threshold_curve_at_same_test_cost=reference, minus_threshold_curve_points=100 * (result["accuracy"] - reference))
            if hull is not None:
                mixture = hull_accuracy(hull, result["macs_fraction"])
                runs[-1].update(hull_accuracy=mixture, minus_hull_points=None if mixture is None else 100 * (result["accuracy"] - mixture))
        accuracy, cost = (np.array([r[k] for r in runs]) for k in ("test_accuracy", "test_macs_fraction"))
        diff = np.array([r["minus_threshold_points"] for r in runs])
        if hull is not None:
            mixture = hull_accuracy(hull, threshold["macs_fraction"])
            threshold["minus_hull_points"] = None if mixture is None else 100 * (threshold["accuracy"] - mixture)
        rows.append({"val_target": target,
                     "threshold": {"tau": threshold["tau"], "test_accuracy": threshold["accuracy"], "test_macs_fraction": threshold["macs_fraction"],
                                   **({"minus_hull_points": threshold["minus_hull_points"]} if hull is not None else {})},
                     "gain": {"test_accuracy_mean": float(accuracy.mean()), "test_accuracy_std": float(accuracy.std()),
                              "test_macs_fraction_mean": float(cost.mean()), "test_macs_fraction_std": float(cost.std()),
                              "minus_threshold_points_mean": float(diff.mean()), "minus_threshold_points_std": float(diff.std()),
                              **({"minus_hull_points_mean": float(np.mean([r["minus_hull_points"] for r in runs])),
                                  "minus_hull_points_std": float(np.std([r["minus_hull_points"] for r in runs]))}
                                 if hull is not None and all(r["minus_hull_points"] is not None for r in runs) else {}),
                              **({"minus_threshold_curve_points_mean": float(np.mean([r["minus_threshold_curve_points"] for r in runs])),
                                  "minus_threshold_curve_points_std": float(np.std([r["minus_threshold_curve_points"] for r in runs]))}
                                 if curve is not None else {}),
                              "runs": runs}})
        print(f"val target {target}: threshold {threshold['accuracy']:.4f} at {threshold['macs_fraction']:.3f}, gain "
              f"{accuracy.mean():.4f} ± {accuracy.std():.4f} at {cost.mean():.3f} ({diff.mean():+.2f} ± {diff.std():.2f} points)",
              flush=True, file=sys.stderr)
    print(json.dumps({"env": args.env, "backbone": args.backbone, "chosen_on": "val", "std": "population (numpy default), over seeds",
                      "static_hull": hull, "threshold_curve_reference": "401 τ from val quantiles, scored on test" if curve is not None else None,
                      "rows": rows, "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    main()
