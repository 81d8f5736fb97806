"""Batch-1 latency of trained ``reinforce`` policies on ``DynamicResNet-v0``, deployed as
:class:`~routing_env.routed.RoutedModel` (issue 14: does a latency-priced policy run faster than a
MACs-priced one?). For each run folder: the median wall time of routing one `test` image, over
``--n`` images each routed ``--repeats`` times, and of the full network on the same images timed
alternately with it (``latency_over_full``), beside the run's `test` accuracy and MACs fraction
(from its ``test.json``). Prints JSON.

    ROUTING_ENV_DATA=.data OMP_NUM_THREADS=1 python benchmarks/routed_latency.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from agents import load_agent
from routing_env.experiments import evaluation_env
from routing_env.routed import RoutedModel


def paired_latency_ms(routed: torch.nn.Module, full: torch.nn.Module, images: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median over images of the median over ``repeats`` of one batch-1 forward of ``routed`` and of
    ``full``, in ms, the two timed alternately on each image (a shared VM's speed drifts by ±15%
    between runs, so a ratio of times taken minutes apart says little)."""
    routed_medians, full_medians = [], []
    with torch.inference_mode():
        for x in images:
            x = x[None]
            routed(x), full(x)  # warm-up
            pairs = []
            for _ in range(repeats):
                began = time.perf_counter()
                routed(x)
                middle = time.perf_counter()
                full(x)
                pairs.append((middle - began, time.perf_counter() - middle))
            routed_medians.append(np.median([p[0] for p in pairs]))
            full_medians.append(np.median([p[1] for p in pairs]))
    return 1e3 * float(np.median(routed_medians)), 1e3 * float(np.median(full_medians))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (written by `train` or a sweep) of reinforce on DynamicResNet-v0")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for run in map(Path, args.runs):
        config = json.loads((run / "config.json").read_text())
        env = evaluation_env(config["env"], config["env_kwargs"], "test", run=run)
        routed = RoutedModel.from_env(env, load_agent(run, env).policy_module())
        full = routed.route_module([len(routed.model.widths) - 1] * routed.num_stages)  # the same inference copy, full path, no policy
        test = json.loads((run / "test.json").read_text())["test"]
        routed_ms, full_ms = paired_latency_ms(routed, full, env.unwrapped.core.executor.inputs[: args.n], args.repeats)
        rows.append({"run": str(run), "cost": config["env_kwargs"].get("cost", "macs"), "test_accuracy": test["accuracy"],
                     "test_macs_fraction": test["macs_fraction"], "latency_ms": routed_ms, "full_network_ms": full_ms,
                     "latency_over_full": routed_ms / full_ms})
    print(json.dumps({"machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
                      "n": args.n, "repeats": args.repeats, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
