"""Every static route of a dynamic ResNet: accuracy and MACs on a split, as JSON, so that anyone can
check a model card's ``routes_on_test``.

    python benchmarks/dynamic_routes.py [--backbone cifar10-resnet20-dynamic] [--split test] [--single-skips] > routes.json

Routes (:func:`routing_env.backbones.dynamic.static_routes`): the full path, every block at each
width, each exit on the full-width path, and random skipping at 25% and 50% (per image, seed 0);
with ``--single-skips`` also the full path with each skippable block skipped alone.
MACs: FlopCounterMode, the head read at the exit included. Needs CIFAR-10 (``ROUTING_ENV_DATA``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from routing_env import pretrained
from routing_env.backbones.dynamic import DynamicResNetBackbone, route_report
from routing_env.data import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cifar10-resnet20-dynamic", help="a pretrained dynamic ResNet's name")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--single-skips", action="store_true", help="also the full path with each skippable block skipped alone")
    args = parser.parse_args()
    backbone = pretrained.load(args.backbone)
    if not isinstance(backbone, DynamicResNetBackbone):
        raise SystemExit(f"{args.backbone!r} is not a dynamic ResNet")
    manifest = pretrained.available()[args.backbone]
    began = time.time()
    routes = route_report(backbone.model, load_split(manifest["dataset"], args.split), single_skips=args.single_skips)
    print(json.dumps({
        "backbone": args.backbone,
        "weights_sha256": manifest["sha256"],
        "split": args.split,
        "routes": routes,
        "seconds": round(time.time() - began, 1),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, {torch.get_num_threads()} threads",
    }, indent=1))


if __name__ == "__main__":
    main()
