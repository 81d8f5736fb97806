"""Re-check a sweep's "static mixture at the same test cost" against today's static routes, which add
every earlier exit at every narrower width ("exit p at width w") to the exits at full width and the
uniform widths run to the end that the sweep was compared with.

    ROUTING_ENV_DATA=.data python benchmarks/hull_recheck.py \
        benchmarks/results/cifar10-resnet20-dynamic-v2-exit-dense/results.json > hull-recheck.json

Reads the sweep's environment options and its runs' `test` figures from `results.json`, evaluates the
static rows of the same backbone on `test` (the weights must be those the sweep ran on: their sha256 is
checked against the runs' `backbone_sha256`), and prints one JSON object: the added routes, which of them
lie above the old hull, and per (agent, λ) the margin over the old hull and over the new one, mean ± std
over the seeds, as the sweep computes it.
"""

from __future__ import annotations

import argparse
import json
import sys

from routing_env.experiments.baselines import hull_accuracy, static_hull, static_rows
from routing_env.experiments.sweep import group_runs
from routing_env.experiments.train import evaluation_env


def margins(group: dict) -> dict[str, float] | None:
    """A group's margin over the hull as the sweep computed it (:func:`group_runs`); ``None`` if a seed
    is cheaper than every static route."""
    if "hull_accuracy_mean" not in group:
        return None
    return {"hull_accuracy_mean": group["hull_accuracy_mean"], "minus_hull_mean": group["accuracy_minus_hull_mean"],
            "minus_hull_std": group["accuracy_minus_hull_std"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a sweep's results.json (frozen backbone)")
    args = parser.parse_args()
    results = json.load(open(args.results))
    env_id, env_kwargs = results["spec"]["env_id"], results["spec"]["env_kwargs"]
    sha = evaluation_env(env_id, env_kwargs, "test").routing.weights_sha256
    swept = {r["setting"].get("backbone_sha256") for r in results["runs"]}
    if swept != {sha}:
        sys.exit(f"the sweep ran on weights {sorted(map(str, swept))}, the backbone loads {sha}: not the same network")
    old_hull = results["static_hull"]
    rows = static_rows(env_id, env_kwargs, "test")
    new_hull = static_hull(rows)
    known = {s["label"] for s in results["singles"]}
    added = [{"label": r["label"], "accuracy": r["accuracy"], "macs_fraction": r["macs_fraction"]} for r in rows if r["label"] not in known]
    for row in added:
        at = hull_accuracy(old_hull, row["macs_fraction"])
        row["minus_old_hull"] = None if at is None else row["accuracy"] - at
    old, new = group_runs(results["runs"], old_hull), group_runs(results["runs"], new_hull)
    print(json.dumps({
        "results": args.results, "env_id": env_id, "env_kwargs": env_kwargs, "backbone_sha256": sha,
        "added_routes": added,
        "added_above_old_hull": [r["label"] for r in added if r["minus_old_hull"] is not None and r["minus_old_hull"] > 0],
        "old_hull": old_hull, "new_hull": new_hull,
        "groups": [{"agent": g["agent"], "lam": g["lam"], "seeds": len(g["seeds"]), "test_macs_fraction_mean": g["macs_fraction_mean"],
                    "old": margins(g), "new": margins(h)} for g, h in zip(old, new)],
    }, indent=1))


if __name__ == "__main__":
    main()
