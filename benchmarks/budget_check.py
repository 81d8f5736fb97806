"""The hard budget at scale: episodes on both families under ``max_macs`` never spend more than it.

    python benchmarks/budget_check.py [--episodes 100000] > benchmarks/results/budget-check.json

For each backbone (``tiny-cascade``, ``tiny-dynamic-resnet``) and budget, ``--episodes`` episodes with
uniformly random actions (invalid ones included) and as many with adversarial ones — always the widest
RUN, never EXIT, what an input crafted to maximise compute would make a policy do — on a vector env of
1,024 slots. Prints one JSON object: per case the episodes, the largest ``macs_fraction`` seen, and the
number of budget violations (the target is 0).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from routing_env import RoutingVectorEnv
from routing_env.provenance import provenance


def run(backbone: str, max_macs: float, episodes: int, adversarial: bool, seed: int = 0) -> dict[str, object]:
    env = RoutingVectorEnv(num_envs=1024, backbone=backbone, max_macs=max_macs)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    a = env.single_action_space.n
    ended, worst, violations = 0, 0.0, 0
    while ended < episodes:
        actions = np.full(1024, a - 1) if adversarial else rng.integers(0, a, 1024)
        _, _, terminated, _, info = env.step(actions)
        worst = max(worst, float(info["macs_fraction"].max()))
        violations += int((info["macs_fraction"] > max_macs * (1 + 1e-9)).sum())
        ended += int(terminated.sum())
    return {"backbone": backbone, "max_macs": max_macs, "actions": "adversarial" if adversarial else "random",
            "episodes": ended, "largest_macs_fraction": worst, "violations": violations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100_000)
    args = parser.parse_args()
    began = time.time()
    cases = [run(b, f, args.episodes, adv) for b in ("tiny-cascade", "tiny-dynamic-resnet") for f in (0.3, 0.6, 1.1) for adv in (False, True)]
    print(json.dumps({"cases": cases, "violations": sum(c["violations"] for c in cases), "seconds": round(time.time() - began, 1),
                      "provenance": provenance()}, indent=1))


if __name__ == "__main__":
    main()
