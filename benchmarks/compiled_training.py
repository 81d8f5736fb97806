"""Does ``torch.compile`` speed up a CPU training step of a plain CIFAR ResNet (``routing-env pretrain``'s)?

    python benchmarks/compiled_training.py [--depth 56] [--threads 2] [--steps 15]   # prints one JSON object

One step like ``pretrain --precision bf16``'s (batch 128, channels-last, bfloat16 autocast, SGD with
momentum 0.9 and weight decay 5e-4 on every parameter, where pretrain spares BatchNorm's: the same
work, label smoothing 0.1) on random images, eager, then
``torch.compile``d (the forward; the backward through AOTAutograd), then eager again, each on a fresh
network after three warm-up steps (the compiled one's include its compilation, reported apart).
Why: the long CPU trainings (ResNet-56 for 160 epochs, about 3.5 h on two cores) would be worth a
compile flag if it paid; measured, it does not.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--depth", type=int, default=56)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--steps", type=int, default=15)
args = parser.parse_args()
torch.set_num_threads(args.threads)

from routing_env.backbones.resnet import CifarResNet  # noqa: E402
from routing_env.provenance import provenance  # noqa: E402

torch.manual_seed(0)
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,))


def seconds_per_step(compiled: bool) -> tuple[float, float]:
    """(seconds a step after warm-up, seconds of the three warm-up steps)."""
    model = CifarResNet(args.depth, 10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    forward = torch.compile(model) if compiled else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(forward(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    began = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(args.steps):
        step()
    return (time.perf_counter() - began) / args.steps, warm


eager_before, _ = seconds_per_step(False)
compiled, compile_warm_up = seconds_per_step(True)
eager_after, _ = seconds_per_step(False)
print(json.dumps({
    "depth": args.depth, "threads": torch.get_num_threads(), "steps": args.steps, "provenance": provenance(),
    "eager_ms": [eager_before * 1e3, eager_after * 1e3], "compiled_ms": compiled * 1e3,
    "compiled_warm_up_s": compile_warm_up,
    "compiled_over_eager": compiled / ((eager_before + eager_after) / 2),
}, indent=1))
