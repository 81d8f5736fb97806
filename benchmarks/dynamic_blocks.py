"""Measured CPU latency of dynamic ResNet blocks at each channel width, against their MACs ratio.

    python benchmarks/dynamic_blocks.py [--model resnet20-dynamic] [--repeats 50] > out.json

Prints one JSON object: for one block of each stage (the first, downsampling block and a plain one),
batch 1 and 64, every width: the median wall time of ``block(x, width)`` under ``torch.inference_mode``
and its ratio to the full width, beside the ratio of MACs (FlopCounterMode). Latency does not depend
on the weights, so the network is freshly initialised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from routing_env.backbones.dynamic import dynamic_costs
from routing_env.backbones.resnet import DYNAMIC
from routing_env.latency import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20-dynamic", choices=sorted(DYNAMIC))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batches", default="1,64")
    args = parser.parse_args()
    model = DYNAMIC[args.model]().eval()
    costs = dynamic_costs(model, (3, 32, 32))
    n = model.num_blocks // 3
    chosen = sorted({0, 1, n, n + 1, 2 * n, 2 * n + 1} & set(range(model.num_blocks)))
    rows = []
    with torch.inference_mode():
        inputs = [model.stem(torch.zeros(1, 3, 32, 32))]
        for block in model.blocks:
            inputs.append(block(inputs[-1]))
        for batch in (int(b) for b in args.batches.split(",")):
            for k in chosen:
                x = torch.randn(batch, *inputs[k].shape[1:])
                block = model.blocks[k]
                full = median_seconds(lambda: block(x, len(model.widths) - 1), args.repeats, warmup=3)
                for j, w in enumerate(model.widths):
                    t = median_seconds(lambda: block(x, j), args.repeats, warmup=3)
                    rows.append(
                        {
                            "block": k,
                            "input_shape": list(x.shape[1:]),
                            "downsampling": not block.skippable,
                            "batch": batch,
                            "width": w,
                            "latency_ms": round(t * 1e3, 4),
                            "latency_ratio": round(t / full, 4),
                            "macs": float(costs.stage[k, j]),
                            "macs_ratio": round(float(costs.stage[k, j] / costs.stage[k, -1]), 4),
                        }
                    )
    print(
        json.dumps(
            {
                "benchmark": "dynamic ResNet block latency by width",
                "model": args.model,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}",
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "repeats": args.repeats,
                "unit": "median wall seconds of block(x, width) under torch.inference_mode, in ms; MACs by FlopCounterMode",
                "blocks": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
