"""An exit rule tuned on ``val`` to each target ``val`` cost, against one network alone, on ``test`` with
a paired bootstrap, as JSON: whether "the cascade is above ResNet-56 at under 0.20 of its MACs" says
more than the noise of 10,000 `test` images, and where the images stop (``stop_shares``: the share of
`test` images settled by each member). The rule is the confidence threshold, or with ``--rule gain``
the ``gain`` agent (routing_env/agents/gain.py, one row per fold seed of ``--seeds``, as
``benchmarks/gain_at_costs.py`` fits it).

    python benchmarks/cascade_vs_member.py --backbone cifar10-resnet-cascade-5-kd --against cifar10-resnet-cascade:-1 --targets 0.18,0.2,0.25,0.3
    python benchmarks/cascade_vs_member.py --rule gain --seeds 0,1,2 --backbone cifar10-resnet-cascade-5-kd --against cifar10-resnet-cascade:-1 --targets 0.18,0.2

``--against CASCADE:MEMBER`` names a member of any cascade (shipped, under ``ROUTING_ENV_PRETRAINED``,
or built in); both must hold the same `test` images in the same order (their labels are checked). τ is
tuned exactly as ``benchmarks/threshold_at_costs.py`` tunes it (the ``threshold`` agent fitted on
``val``, :func:`routing_env.experiments.baselines.threshold_row`) and scored on the `test` exit table,
as ``benchmarks/threshold_at_member.py`` scores it. The interval resamples the `test` images with
replacement, the same resample for both (:func:`routing_env.evaluation.paired_interval`, as
``benchmarks/gain_at_costs.py`` does for a rule against the threshold). Costs are fractions of the
cascade's reference (its largest member); ``test_macs_over_member`` is the same cost over the compared
network's MACs, the seed paper's "at x of its FLOPs" when that network is not the reference. Seconds, offline.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from routing_env.agents import make_agent
from routing_env.agents.baselines import threshold_outcomes
from routing_env.evaluation import BOOTSTRAP, ExitTable, exit_table, paired_interval, route_split
from routing_env.experiments.train import evaluation_env
from routing_env.provenance import provenance

ENV_ID = "routing_env/Cascade-v0"


def parse_member(spec: str) -> tuple[str, int]:
    """``CASCADE:MEMBER`` (``MEMBER`` an index, negative from the end) as (name, index)."""
    name, sep, index = spec.rpartition(":")
    if not sep or not name:
        raise SystemExit(f"--against {spec!r}: expected CASCADE:MEMBER, e.g. cifar10-resnet-cascade:-1")
    try:
        return name, int(index)
    except ValueError:
        raise SystemExit(f"--against {spec!r}: MEMBER must be an integer index, got {index!r}") from None


def threshold_outcome(val: object, table: ExitTable, target: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """The threshold tuned on ``val`` to ``target`` (as ``threshold_row`` tunes it for
    ``benchmarks/threshold_at_costs.py``): its τ with its ``val`` accuracy and cost (under the target
    where no dearer τ is more accurate on ``val``), and per `test` image its correctness and the row of
    the head it stops at, from the `test` exit table."""
    threshold = make_agent("threshold", val, target_macs_fraction=target)
    threshold.learn(0)
    val_correct, val_cost = threshold_outcomes(exit_table(val), threshold.tau)
    correct, cost = threshold_outcomes(table, threshold.tau)
    fit = {"tau": threshold.tau, "val_accuracy": float(val_correct.mean()), "val_macs_fraction": float(val_cost.mean()),
           "test_macs_fraction": float(cost.mean())}
    return fit, correct, table.first_exit(table.confidence >= threshold.tau)


def gain_outcome(val: object, test: object, table: ExitTable, target: float, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """The ``gain`` agent fitted on ``val`` to ``target`` with fold seed ``seed`` (as
    ``benchmarks/gain_at_costs.py`` fits it), routed on ``test``: its fit with its ``val`` accuracy and
    cost, and per image its correctness and the row of the head it stops at."""
    agent = make_agent("gain", val, seed=seed, target_macs_fraction=target)
    agent.learn(0)
    on_val = route_split(agent, val)
    records = route_split(agent, test)
    if not np.isin(records.exit_position, table.positions).all():
        raise SystemExit(f"gain exited where no head is (positions {sorted(set(records.exit_position.tolist()))}, heads {table.positions.tolist()})")
    exits = np.searchsorted(table.positions, records.exit_position)
    fit = {"fold_seed": seed, "alpha": agent.alpha, "tau": agent.tau, "val_accuracy": float(on_val.correct.mean()),
           "val_macs_fraction": float(on_val.macs_fraction.mean()), "test_macs_fraction": float(records.macs_fraction.mean())}
    return fit, records.correct, exits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cifar10-resnet-cascade-5-kd")
    parser.add_argument("--against", default="cifar10-resnet-cascade:-1", help="CASCADE:MEMBER, the network alone")
    parser.add_argument("--targets", default="0.18,0.2,0.25,0.3", help="val MACs fractions, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap's resamples")
    parser.add_argument("--rule", choices=("threshold", "gain"), default="threshold", help="the exit rule tuned on val")
    parser.add_argument("--seeds", default="0,1,2", help="--rule gain: the fold seeds, a row each")
    args = parser.parse_args()
    other, member = parse_member(args.against)
    kwargs = {"backbone": args.backbone, **({"obs_mode": "heads"} if args.rule == "gain" else {})}
    test, other_test = evaluation_env(ENV_ID, kwargs, "test"), evaluation_env(ENV_ID, {"backbone": other}, "test")
    members = other_test.unwrapped.core.backbone.member_macs
    if not -len(members) <= member < len(members):
        raise SystemExit(f"--against {args.against!r}: {other} has {len(members)} members, so MEMBER must be in "
                         f"[{-len(members)}, {len(members) - 1}], got {member}")
    if not np.array_equal(test.unwrapped.core.labels, other_test.unwrapped.core.labels):
        raise SystemExit(f"{args.backbone} and {other} do not hold the same test images in the same order")
    table, member_correct = exit_table(test), exit_table(other_test).correct[member]
    member_macs = members[member] / test.unwrapped.core.backbone.costs.reference
    val = evaluation_env(ENV_ID, kwargs, "val")
    rows = []
    for target in (float(t) for t in args.targets.split(",")):
        outcomes = ([threshold_outcome(val, table, target)] if args.rule == "threshold"
                    else [gain_outcome(val, test, table, target, int(s)) for s in args.seeds.split(",")])
        for fit, correct, exits in outcomes:
            rows.append({"val_target": target, **fit, "test_macs_over_member": round(fit["test_macs_fraction"] / member_macs, 4),
                         "test_accuracy": float(correct.mean()),
                         "stop_shares": (np.bincount(exits, minlength=len(table.positions)) / len(exits)).round(4).tolist(),
                         "minus_member_points": round(100 * float(correct.mean() - member_correct.mean()), 4),
                         "minus_member_points_95": [round(v, 4) for v in paired_interval(correct, member_correct, args.seed)]})
    print(json.dumps({"backbone": args.backbone, "rule": args.rule, "against": args.against, "member_test_accuracy": float(member_correct.mean()),
                      "member_macs_fraction": float(member_macs), "chosen_on": "val", "resamples": BOOTSTRAP,
                      "seed": args.seed, "rows": rows, "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    main()
