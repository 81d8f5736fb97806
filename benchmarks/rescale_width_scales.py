"""Issue 12: the rescaled dynamic ResNet-20 of the A/B (training/cifar10-resnet20-dynamic-ab-rescale),
every static route on val and test with its learned width scales, and with them set to 1 after
training (is a skip-only rescaling the same network?). Prints JSON. Needs the run's weights.pt, which
`routing-env pretrain ... --rescale --resume` rebuilds from its checkpoint (training/README.md)."""

import json

import torch

from routing_env.backbones.dynamic import route_report
from routing_env.backbones.resnet import DynamicResNet
from routing_env.data import load_split

torch.set_num_threads(2)
sd = torch.load("training/cifar10-resnet20-dynamic-ab-rescale/weights.pt", weights_only=True)
out = {}
for name in ("with width scales", "width scales at 1"):
    m = DynamicResNet(20, rescale=True); m.load_state_dict(sd); m.eval()
    if name == "width scales at 1":
        with torch.no_grad():
            for b in m.blocks: b.scale_width.fill_(1.0)
    out[name] = {split: {r["route"]: r["accuracy"] for r in route_report(m, load_split("cifar10", split))} for split in ("val", "test")}
print(json.dumps(out, indent=1))
