"""Batch-1 latency of trained ``reinforce`` policies on ``DynamicResNet-v0``, deployed as
:class:`~routing_env.routed.RoutedModel` (issue 14: does a latency-priced policy run faster than a
MACs-priced one?). For each run folder: the median wall time of routing one `test` image, over
``--n`` images each routed ``--repeats`` times, beside the run's `test` accuracy and MACs fraction
(from its ``test.json``). Prints JSON.

    ROUTING_ENV_DATA=.data OMP_NUM_THREADS=1 python benchmarks/routed_latency.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from agents import load_agent
from routing_env.experiments import evaluation_env
from routing_env.latency import median_seconds
from routing_env.routed import RoutedModel


def routed_latency_ms(routed: torch.nn.Module, images: torch.Tensor, repeats: int) -> float:
    """Median over images of the median over ``repeats`` of one batch-1 forward, in ms."""
    with torch.inference_mode():
        medians = [median_seconds(lambda x=x[None]: routed(x), repeats) for x in images]
    return 1e3 * float(np.median(medians))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (written by `train` or a sweep) of reinforce on DynamicResNet-v0")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows, full_ms = [], None
    for run in map(Path, args.runs):
        config = json.loads((run / "config.json").read_text())
        env = evaluation_env(config["env"], config["env_kwargs"], "test", run=run)
        routed = RoutedModel.from_env(env, load_agent(run, env).policy_module())
        test = json.loads((run / "test.json").read_text())["test"]
        rows.append({"run": str(run), "cost": config["env_kwargs"].get("cost", "macs"), "test_accuracy": test["accuracy"],
                     "test_macs_fraction": test["macs_fraction"],
                     "latency_ms": routed_latency_ms(routed, env.unwrapped.core.executor.inputs[: args.n], args.repeats)})
        if full_ms is None:  # the reference: the same inference copy along the full path, no policy
            full = routed.route_module([len(routed.model.widths) - 1] * routed.num_stages)
            full_ms = routed_latency_ms(full, env.unwrapped.core.executor.inputs[: args.n], args.repeats)
    print(json.dumps({"machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
                      "n": args.n, "repeats": args.repeats, "full_network_ms": full_ms, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
