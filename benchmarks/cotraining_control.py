"""A control for joint training (issue 13): fine-tune one shipped cascade member on *every* augmented
`train` image with co-training's own optimizer (SGD, momentum 0.9, batches of 32, no weight decay),
with no policy at all, and report its `val` and `test` accuracy. If the member loses accuracy here, the
loss joint training shows is the optimizer's, not the routing's. ``--bn eval`` keeps BatchNorm in eval
mode as co-training does; ``--bn train`` updates its statistics. Prints JSON.

    ROUTING_ENV_DATA=.data python benchmarks/cotraining_control.py --member resnet8 --epochs 10 --lr 0.002 --bn eval
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from routing_env.backbones.resnet import CLASSIFIERS
from routing_env.checkpoints import load_state_dict
from routing_env.data import augment, load_split
from routing_env.pretrain import accuracy
from routing_env.pretrained import root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", default="resnet8", choices=("resnet8", "resnet20", "resnet56"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bn", choices=("eval", "train"), default="eval")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = CLASSIFIERS[args.member](10)
    model.load_state_dict(load_state_dict(root() / "cifar10-resnet-cascade" / f"{args.member}.pt"))
    train, val, test = (load_split("cifar10", s) for s in ("train", "val", "test"))
    before = {"val": accuracy(model, val), "test": accuracy(model, test)}
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(args.seed)
    labels = torch.from_numpy(train.labels)
    began = time.time()
    for _ in range(args.epochs):
        model.train(args.bn == "train")
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train) - args.batch_size + 1, args.batch_size):
            batch = order[start : start + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(augment(train.inputs[batch], generator)), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    after = {"val": accuracy(model, val), "test": accuracy(model, test)}
    print(json.dumps({"arguments": vars(args), "before": before, "after": after, "minutes": round((time.time() - began) / 60, 1)}))


if __name__ == "__main__":
    main()
