"""Issue 20: what the in-place inference block buys, against the out-of-place one it replaced.

    ROUTING_ENV_DATA=.data python benchmarks/inplace_blocks.py [--threads N] [--repeats R]   # one JSON object

``FoldedBlock.forward`` (the inference copy's block, what the frozen environment and
:class:`~routing_env.routed.RoutedModel` run) applies its ReLUs, residual sum and LC-Net scale in
place on the convolutions' fresh outputs. ``out_of_place`` below is the forward it replaced, kept
here only as the baseline. Both run in interleaved rounds in one process
(:func:`routing_env.bench.interleaved_medians`), so the machine's drift hits them alike: the shipped
dynamic ResNet-20's full path and every block at width 0.5 (``RoutedModel.route_module``) at batch 1
and 64, and one ``DynamicResNet-v0`` vector step at B = 256 under a random policy.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeats", type=int, default=30)
args = parser.parse_args()
torch.set_num_threads(args.threads)

from routing_env.backbones.resnet import FoldedBlock  # noqa: E402
from routing_env.bench import HalfWidthPolicy, interleaved_medians, random_valid  # noqa: E402
from routing_env.env import RoutingVectorEnv  # noqa: E402
from routing_env.pretrained import load  # noqa: E402
from routing_env.provenance import provenance  # noqa: E402
from routing_env.routed import RoutedModel  # noqa: E402


def out_of_place(self: FoldedBlock, x: torch.Tensor, width: int = -1) -> torch.Tensor:
    """``FoldedBlock.forward`` before issue 20's in-place step: a new map per ReLU, sum and scale."""
    j = width % len(self.inner)
    buffers, (w1, b1, w2, b2) = self._buffers, self.names[j]
    out = F.relu(F.conv2d(x, buffers[w1], buffers[b1], stride=self.stride, padding=1))
    out = F.relu(F.conv2d(out, buffers[w2], buffers[b2], padding=1) + (x if self.identity else self.shortcut(x)))
    if self.rescale and j < len(self.inner) - 1:
        out = out * self.scale_width[j].view(1, -1, 1, 1)
    return out


in_place = FoldedBlock.forward
backbone = load("cifar10-resnet20-dynamic")
n, last = backbone.spec.num_stages, len(backbone.spec.widths) - 1
routed = RoutedModel(backbone, HalfWidthPolicy(n))
routes = {"full": routed.route_module([last] * n), "half": routed.route_module([1] * n)}
inputs = {b: torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8) for b in (1, 64)}
venv = RoutingVectorEnv(num_envs=256, backbone="cifar10-resnet20-dynamic")
venv.reset(seed=0)
rng = np.random.default_rng(0)


def with_forward(forward, fn):  # type: ignore[no-untyped-def]
    def run() -> object:
        FoldedBlock.forward = forward
        return fn()
    return run


runs = {}
for tag, forward in (("out_of_place", out_of_place), ("in_place", in_place)):
    for b, x in inputs.items():
        for name, module in routes.items():
            runs[f"{name}_batch{b}_{tag}"] = with_forward(forward, lambda module=module, x=x: module(x))
    runs[f"env_step_b256_{tag}"] = with_forward(forward, lambda: venv.step(random_valid(rng, venv.action_masks())))
try:
    with torch.inference_mode():
        for name, module in routes.items():  # the two forwards agree
            for x in inputs.values():
                FoldedBlock.forward = out_of_place
                before = module(x)
                FoldedBlock.forward = in_place
                assert torch.equal(before, module(x)), name
        seconds = interleaved_medians(runs, args.repeats)
finally:
    FoldedBlock.forward = in_place
out = {"threads": torch.get_num_threads(), "provenance": provenance()}
out.update({f"{k}_ms": v * 1e3 for k, v in seconds.items()})
for key in ("full_batch1", "half_batch1", "full_batch64", "half_batch64", "env_step_b256"):
    out[f"{key}_in_place_over_out_of_place"] = seconds[f"{key}_in_place"] / seconds[f"{key}_out_of_place"]
for b in inputs:
    for tag in ("out_of_place", "in_place"):
        out[f"half_over_full_batch{b}_{tag}"] = seconds[f"half_batch{b}_{tag}"] / seconds[f"full_batch{b}_{tag}"]
print(json.dumps(out, indent=1))
