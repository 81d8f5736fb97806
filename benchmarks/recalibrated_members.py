"""Each co-trained cascade member's `val` and `test` accuracy as saved, and after re-estimating its BatchNorm
statistics on augmented `train` batches (issue 13: how much of what joint training costs the members
is stale normalisation). Prints JSON.

    ROUTING_ENV_DATA=.data python benchmarks/recalibrated_members.py runs/joint-cifar10-e10/backbone.pt
    ROUTING_ENV_DATA=.data python benchmarks/recalibrated_members.py --base cifar10-resnet-cascade-5 runs/joint5/backbone.pt
"""

from __future__ import annotations

import argparse
import json

import torch

from routing_env import pretrained
from routing_env.backbones.resnet import CLASSIFIERS, recalibrate_on_images
from routing_env.checkpoints import load_state_dict
from routing_env.data import load_split
from routing_env.pretrain import accuracy
from routing_env.pretrained import split_members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone", help="a co-trained cascade's backbone.pt (written by `routing-env joint`)")
    parser.add_argument("--base", default="cifar10-resnet-cascade", help="the pretrained cascade it was co-trained from (its members' architectures, in order)")
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    try:
        entry = pretrained.cascade_folder(args.base)
    except ValueError as error:
        parser.error(f"--base: {error}")
    members = [member["model"] for member in entry[1]["members"]]
    dataset, num_classes = entry[1]["dataset"], entry[1]["num_classes"]
    val, test, train = (load_split(dataset, split) for split in ("val", "test", "train"))
    generator = torch.Generator().manual_seed(0)
    rows = []
    for name, state in zip(members, split_members(load_state_dict(args.backbone), len(members))):
        model = CLASSIFIERS[name](num_classes)
        model.load_state_dict(state)
        saved = {"val_accuracy": accuracy(model, val), "test_accuracy": accuracy(model, test)}
        recalibrate_on_images(model, train.inputs, args.batches, generator)
        rows.append({"member": name, **saved, "val_accuracy_recalibrated": accuracy(model, val),
                     "test_accuracy_recalibrated": accuracy(model, test)})
    print(json.dumps({"backbone": args.backbone, "base": args.base, "batches": args.batches, "members": rows}, indent=1))


if __name__ == "__main__":
    main()
