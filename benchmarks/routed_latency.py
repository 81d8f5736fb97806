"""Batch-1 latency of trained ``reinforce`` policies on ``DynamicResNet-v0``, deployed as
:class:`~routing_env.routed.RoutedModel` (issue 14: does a latency-priced policy run faster than a
MACs-priced one?). For each run folder: the median wall time of routing one `test` image, over
``--n`` images each routed ``--repeats`` times, and, timed alternately with it on the same images,
the full network (``latency_over_full``) and the route the policy took most often on them as a
fixed route without a policy (``modal_route``: its blocks' choices, the share of images that took
it, and ``latency_over_modal_route``, the policy's own overhead where nearly every image takes that
route), beside the run's `test` accuracy and MACs fraction (from its ``test.json``). Prints JSON.

    ROUTING_ENV_DATA=.data OMP_NUM_THREADS=1 python benchmarks/routed_latency.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from routing_env.agents import load_agent
from routing_env.experiments import evaluation_env
from routing_env.routed import RoutedModel


def paired_latency_ms(modules: dict[str, torch.nn.Module], images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Per module, the median over images of the median over ``repeats`` of one batch-1 forward, in
    ms, the modules timed alternately on each image (a shared VM's speed drifts by ±15% between runs,
    so a ratio of times taken minutes apart says little)."""
    medians: dict[str, list[float]] = {name: [] for name in modules}
    with torch.inference_mode():
        for x in images:
            x = x[None]
            for module in modules.values():
                module(x)  # warm-up
            times: dict[str, list[float]] = {name: [] for name in modules}
            for _ in range(repeats):
                for name, module in modules.items():
                    began = time.perf_counter()
                    module(x)
                    times[name].append(time.perf_counter() - began)
            for name, values in times.items():
                medians[name].append(float(np.median(values)))
    return {name: 1e3 * float(np.median(values)) for name, values in medians.items()}


@contextlib.contextmanager
def recorded_blocks(routed: RoutedModel) -> Iterator[list[tuple[int, int]]]:
    """The ``(block, choice)`` pairs the batch-1 walk runs while inside, in order (it runs every
    block through ``model.block_routes``; an exit ends the list)."""
    calls: list[tuple[int, int]] = []
    model = routed.model
    run_block = model.block_routes

    def recording(k: int, h: torch.Tensor, choice: int) -> torch.Tensor:
        calls.append((k, int(choice)))
        return run_block(k, h, choice)

    model.block_routes = recording
    try:
        yield calls
    finally:
        del model.block_routes  # the instance attribute; the class's method shows through again


def routes_taken(routed: RoutedModel, images: torch.Tensor) -> collections.Counter[tuple[int, ...]]:
    """How many of ``images`` took each route: per route, its blocks' choices up to where it exited."""
    counts: collections.Counter[tuple[int, ...]] = collections.Counter()
    with torch.inference_mode(), recorded_blocks(routed) as calls:
        for x in images:
            calls.clear()
            routed(x[None])
            counts[tuple(choice for _, choice in calls)] += 1
    return counts


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
        images = env.unwrapped.core.executor.inputs[: args.n]
        (modal, count), = routes_taken(routed, images).most_common(1)
        modules = {"routed": routed,
                   "full": routed.route_module([len(routed.model.widths) - 1] * routed.num_stages),  # the same inference copy, no policy
                   "modal_route": routed.route_module(list(modal) + [0] * (routed.num_stages - len(modal)), len(modal))}
        ms = paired_latency_ms(modules, images, args.repeats)
        test = json.loads((run / "test.json").read_text())["test"]
        rows.append({"run": str(run), "cost": config["env_kwargs"].get("cost", "macs"), "test_accuracy": test["accuracy"],
                     "test_macs_fraction": test["macs_fraction"], "latency_ms": ms["routed"], "full_network_ms": ms["full"],
                     "latency_over_full": ms["routed"] / ms["full"], "modal_route": list(modal), "modal_route_share": count / len(images),
                     "modal_route_ms": ms["modal_route"], "modal_route_over_full": ms["modal_route"] / ms["full"],
                     "latency_over_modal_route": ms["routed"] / ms["modal_route"]})
    print(json.dumps({"machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
                      "n": args.n, "repeats": args.repeats, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
