"""A sweep's per-run `test` lines, read from its log, against the static hull of another sweep's
`results.json` on the same backbone, as JSON: for each (agent, λ) the mean ± std of accuracy and MACs
fraction over seeds and of the margin over the hull at each run's own `test` cost, exactly as
`routing-env sweep` computes `accuracy_minus_hull` (:func:`routing_env.experiments.baselines.hull_accuracy`).

For a sweep whose run folders were lost (its log survived): the threshold and random-skip columns,
which need each run's `val` cost, cannot be rebuilt from the log and are not printed. A run's line
printed again (a resumed sweep) counts once; the same run with other figures is refused. The log keeps
no weights, so that the hull is the same backbone's is the caller's to check (the results' `backbone`).

    python benchmarks/sweep_log_vs_hull.py SWEEP.log RESULTS.json > vs-hull.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import numpy as np

from routing_env.experiments.baselines import hull_accuracy

LINE = re.compile(r"^(?P<agent>\S+) lam=(?P<lam>[-+0-9.eE]+) seed=(?P<seed>\d+): test accuracy (?P<acc>[0-9.]+) at (?P<frac>[0-9.]+) of the reference MACs")
"""What ``routing-env sweep`` prints when a run ends."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the sweep's log: one line per run")
    parser.add_argument("results", help="a results.json whose static_hull is the same backbone's on test")
    args = parser.parse_args()
    hull = json.load(open(args.results))["static_hull"]
    runs: dict[tuple[str, float], dict[int, tuple[float, float]]] = defaultdict(dict)
    with open(args.log) as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m:
                continue
            seeds, seed, figures = runs[(m["agent"], float(m["lam"]))], int(m["seed"]), (float(m["acc"]), float(m["frac"]))
            if seeds.get(seed, figures) != figures:  # a resumed sweep reprints a finished run's line: the same figures
                raise SystemExit(f"{m['agent']} λ {m['lam']} seed {seed} appears twice with different figures, "
                                 f"{seeds[seed]} and {figures}: two sweeps' logs in one file?")
            seeds[seed] = figures  # counted once, however often the line repeats
    groups = []
    for (agent, lam), by_seed in sorted(runs.items()):
        rows = [(seed, *figures) for seed, figures in sorted(by_seed.items())]
        acc, frac = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
        at_cost = [hull_accuracy(hull, f) for f in frac]
        if any(a is None for a in at_cost):
            raise SystemExit(f"{agent} λ {lam}: a run costs less than the cheapest static route; no hull there")
        margin = acc - np.array(at_cost)
        groups.append({"agent": agent, "lam": lam, "seeds": sorted(r[0] for r in rows),
                       "accuracy_mean": round(float(acc.mean()), 4), "accuracy_std": round(float(acc.std()), 4),
                       "macs_fraction_mean": round(float(frac.mean()), 4), "macs_fraction_std": round(float(frac.std()), 4),
                       "hull_accuracy_mean": round(float(np.mean(at_cost)), 4), "accuracy_minus_hull_mean": round(float(margin.mean()), 4), "accuracy_minus_hull_std": round(float(margin.std()), 4)})
    print(json.dumps({"log": args.log, "hull_from": args.results, "split": "test", "groups": groups}, indent=2))


if __name__ == "__main__":
    main()
