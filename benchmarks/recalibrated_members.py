"""Each co-trained cascade member's `val` and `test` accuracy as saved, and after re-estimating its BatchNorm
statistics on augmented `train` batches (issue 13: how much of what joint training costs the members
is stale normalisation). Prints JSON.

    ROUTING_ENV_DATA=.data python benchmarks/recalibrated_members.py runs/joint-cifar10-e10/backbone.pt
"""

from __future__ import annotations

import argparse
import json

import torch

from routing_env.backbones.resnet import CLASSIFIERS, recalibrate_on_images
from routing_env.checkpoints import load_state_dict
from routing_env.data import load_split
from routing_env.experiments.joint import split_members
from routing_env.pretrain import accuracy

MEMBERS = ("resnet8", "resnet20", "resnet56")
"""The shipped cascade's members, in order (``cifar10-resnet-cascade``)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone", help="a co-trained cascade's backbone.pt (written by `routing-env joint`)")
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    val, test, train = load_split("cifar10", "val"), load_split("cifar10", "test"), load_split("cifar10", "train")
    generator = torch.Generator().manual_seed(0)
    rows = []
    for name, state in zip(MEMBERS, split_members(load_state_dict(args.backbone), len(MEMBERS))):
        model = CLASSIFIERS[name](10)
        model.load_state_dict(state)
        saved = {"val_accuracy": accuracy(model, val), "test_accuracy": accuracy(model, test)}
        recalibrate_on_images(model, train.inputs, args.batches, generator)
        rows.append({"member": name, **saved, "val_accuracy_recalibrated": accuracy(model, val),
                     "test_accuracy_recalibrated": accuracy(model, test)})
    print(json.dumps({"backbone": args.backbone, "batches": args.batches, "members": rows}, indent=1))


if __name__ == "__main__":
    main()
