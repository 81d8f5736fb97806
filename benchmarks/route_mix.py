"""What the sandwich rule's random routes are: the share of each kind that ``random_route`` draws, as JSON.

    python benchmarks/route_mix.py [--uniform 0.5] [--full-width 0.3] [--skip-rate 0.5] [--whole-uniform] [--draws 20000] > mix.json

The defaults are the v2 run's (``training/cifar10-resnet20-dynamic-v2``) on a ResNet-20 with rescaling.
Kinds: every kept block at one width below full (``uniform width W``), every kept block at full width,
or mixed widths; each split by whether the route skipped any block (every kind skips at a rate drawn
from ``U(0, skip_rate)``, a uniform one not with ``--whole-uniform``). No data, no training: seconds.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from routing_env.backbones.resnet import SKIP_CHOICE, random_route, resnet20_dynamic

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--uniform", type=float, default=0.5)
parser.add_argument("--full-width", type=float, default=0.3)
parser.add_argument("--skip-rate", type=float, default=0.5)
parser.add_argument("--whole-uniform", action="store_true", help="uniform routes skip nothing (--whole-uniform-routes)")
parser.add_argument("--draws", type=int, default=20000)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

model = resnet20_dynamic(rescale=True)
generator = torch.Generator().manual_seed(args.seed)
full = len(model.widths) - 1
counts: collections.Counter[str] = collections.Counter()
for _ in range(args.draws):
    route = random_route(model, args.skip_rate, generator, args.uniform, args.full_width, args.whole_uniform)
    kept = {c for c in route if c != SKIP_CHOICE}
    kind = "mixed widths" if len(kept) > 1 else "every kept block at full width" if kept == {full} else f"uniform width {model.widths[kept.pop()]:g}"
    counts[f"{kind}, {'with skips' if SKIP_CHOICE in route else 'no skip'}"] += 1
print(json.dumps({"command": "python benchmarks/route_mix.py", "arguments": vars(args),
                  "shares": {k: round(v / args.draws, 4) for k, v in sorted(counts.items())}}, indent=2))
