"""Which members a cascade should have: the confidence threshold on every subset of a cascade's members
that keeps its last, tuned on ``val`` to each target ``val`` cost, and the subset chosen on ``val``, as
JSON:

    python benchmarks/member_subsets.py --backbone cifar10-resnet-cascade-6 --targets 0.1,0.15,0.2,0.25,0.3

A subset is the cascade with the other members never run (their MACs not paid): a cascade that could
have been packaged from the same networks. One that keeps the first member is also a static route of
the environment with ``allow_skip=True`` (SKIP over each left-out member; a cascade's first member
always runs). Each subset's τ is tuned exactly as the ``threshold`` agent tunes it
(:func:`routing_env.agents.baselines.tune_threshold`, the best ``val`` accuracy within the target),
on the cascade's exit table restricted to the subset's heads, with costs summed over the subset's
members only. Per target the chosen subset is the one with the best ``val`` accuracy within the target
(the cheaper on a tie; a subset whose first member alone costs more fits none); nothing is read off ``test``. ``minus_full_points`` compares it on ``test`` with the whole
cascade's threshold at the same target, and ``minus_last_points`` with the last member alone, each with
a paired-bootstrap 95% interval (:func:`routing_env.evaluation.paired_interval`). Costs are fractions
of the cascade's reference (its largest member). Seconds, offline for a shipped cascade.
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

from routing_env.agents.baselines import threshold_outcomes, tune_threshold
from routing_env.core import RoutingView
from routing_env.evaluation import BOOTSTRAP, ExitTable, exit_table, paired_interval
from routing_env.experiments.train import evaluation_env
from routing_env.provenance import provenance

ENV_ID = "routing_env/Cascade-v0"


def member_costs(view: RoutingView) -> np.ndarray:
    """Each member's own MACs (features and head) as a fraction of the cascade's reference: exiting at
    head ``p`` pays members ``0..p``. ``ValueError`` for a backbone that is not a cascade."""
    if view.member_macs is None:
        raise ValueError("member subsets need a cascade, whose heads each belong to one member; this backbone has none")
    return np.asarray(view.member_macs, dtype=np.float64) / view.reference_macs


def subset_table(table: ExitTable, members: tuple[int, ...], costs: np.ndarray) -> ExitTable:
    """``table`` restricted to the heads of ``members`` (cheapest first), each exit paying the members of
    the subset up to it."""
    rows = list(members)
    paid = np.cumsum(costs[rows])[:, None] * np.ones_like(table.macs_fraction[rows])
    return ExitTable(positions=np.arange(len(rows)), correct=table.correct[rows], macs_fraction=paid,
                     confidence=table.confidence[rows], probs=table.probs[rows])


def subsets(count: int) -> list[tuple[int, ...]]:
    """Every subset of at least two of ``count`` members that keeps the last, in order."""
    last = count - 1
    return [(*head, last) for r in range(1, count) for head in itertools.combinations(range(last), r)]


def fit(val: ExitTable, test: ExitTable, target: float) -> tuple[dict, np.ndarray]:
    """The threshold tuned on ``val`` to ``target``: its figures on both splits, and per `test` image
    its correctness."""
    tau, _ = tune_threshold(val, target, 0.0)
    val_correct, val_cost = threshold_outcomes(val, tau)
    correct, cost = threshold_outcomes(test, tau)
    return {"tau": tau, "val_accuracy": float(val_correct.mean()), "val_macs_fraction": float(val_cost.mean()),
            "test_accuracy": float(correct.mean()), "test_macs_fraction": float(cost.mean())}, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cifar10-resnet-cascade-6")
    parser.add_argument("--targets", default="0.1,0.15,0.2,0.25,0.3", help="val MACs fractions, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap's resamples")
    args = parser.parse_args()
    val_env, test_env = (evaluation_env(ENV_ID, {"backbone": args.backbone}, split) for split in ("val", "test"))
    val, test = exit_table(val_env), exit_table(test_env)
    costs = member_costs(test_env.routing)
    names = list(test_env.unwrapped.routing.member_names or [f"member {k}" for k in range(len(costs))])
    everyone = tuple(range(len(costs)))
    last_correct = test.correct[-1]
    rows = []
    for target in (float(t) for t in args.targets.split(",")):
        fits = {}
        for members in subsets(len(costs)):
            figures, correct = fit(subset_table(val, members, costs), subset_table(test, members, costs), target)
            fits[members] = ({"members": [names[k] for k in members], **figures}, correct)
        within = [m for m in fits if fits[m][0]["val_macs_fraction"] <= target]  # a subset whose first member costs more fits none
        if not within:
            raise SystemExit(f"target {target}: no subset fits it on val; the cheapest member alone costs {costs[0]:.4f}")
        chosen = max(within, key=lambda m: (fits[m][0]["val_accuracy"], -fits[m][0]["val_macs_fraction"]))
        (best, best_correct), (full, full_correct) = fits[chosen], fits[everyone]
        rows.append({
            "val_target": target,
            "chosen": {**best,
                       "minus_full_points": round(100 * float(best_correct.mean() - full_correct.mean()), 4),
                       "minus_full_points_95": [round(v, 4) for v in paired_interval(best_correct, full_correct, args.seed)],
                       "minus_last_points": round(100 * float(best_correct.mean() - last_correct.mean()), 4),
                       "minus_last_points_95": [round(v, 4) for v in paired_interval(best_correct, last_correct, args.seed)]},
            "full": full,
            "subsets": sorted((figures for figures, _ in fits.values()), key=lambda f: -f["val_accuracy"]),
        })
    print(json.dumps({"backbone": args.backbone, "members": names, "member_macs_fraction": costs.round(6).tolist(),
                      "last_test_accuracy": float(last_correct.mean()), "chosen_on": "val", "resamples": BOOTSTRAP,
                      "seed": args.seed, "rows": rows, "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    main()
