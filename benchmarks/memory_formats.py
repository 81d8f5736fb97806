"""Issue 20: would a routed ResNet-20 at batch 1 run faster with some stages channels-first?

    python benchmarks/memory_formats.py [--threads N] [--repeats 500]   # prints one JSON object

The shipped dynamic ResNet-20's inference copy (BatchNorm folded) along each uniform width (every
block at width index ``j``), at batch 1 and 64, in three memory formats: channels-last throughout
(what ``inference_copy`` and :class:`~routing_env.routed.RoutedModel` use), channels-first
throughout, and ``mixed``: stem and stage 1 (the 32×32 maps, where a probe found narrow convolutions
faster channels-first at batch 1) channels-first, the map converted to channels-last before stage 2.
Per format and batch, each width's median latency (interleaved rounds,
:func:`routing_env.bench.interleaved_medians`) and its ratio to the full width in the same format and
to the channels-last full width. Blocks only: no heads, no policy.
"""

import argparse
import json

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=500, help="calls per route at batch 1 (a tenth at batch 64)")
args = parser.parse_args()
torch.set_num_threads(args.threads)
from routing_env.backbones.resnet import inference_copy  # noqa: E402
from routing_env.bench import interleaved_medians  # noqa: E402
from routing_env.pretrained import load  # noqa: E402
from routing_env.provenance import provenance  # noqa: E402

model = load("cifar10-resnet20-dynamic").model
last_copy, first_copy = inference_copy(model, channels_last=True), inference_copy(model, channels_last=False)
stage2 = next(k for k, block in enumerate(model.blocks) if block.stride == 2)  # the first block on 16×16 maps


def walk(x: torch.Tensor, width: int, fmt: str) -> torch.Tensor:
    """Stem and every block at ``width`` in format ``fmt`` (``last``, ``first`` or ``mixed``)."""
    first = fmt != "last"
    h = (first_copy if first else last_copy).stem(x.contiguous(memory_format=torch.contiguous_format if first else torch.channels_last))
    for k in range(len(model.blocks)):
        if fmt == "mixed" and k == stage2:
            h, first = h.contiguous(memory_format=torch.channels_last), False
        h = (first_copy if first else last_copy).blocks[k](h, width)
    return h


widths = range(len(model.widths))
out = {"threads": torch.get_num_threads(), "widths": list(model.widths), "provenance": provenance()}
with torch.inference_mode():
    for batch in (1, 64):
        x = torch.randn(batch, 3, 32, 32)
        torch.testing.assert_close(walk(x, 0, "mixed"), walk(x, 0, "last"), rtol=1e-4, atol=1e-4)
        fns = {f"{fmt}_w{j}": (lambda j=j, fmt=fmt: walk(x, j, fmt)) for fmt in ("last", "first", "mixed") for j in widths}
        s = interleaved_medians(fns, args.repeats if batch == 1 else max(5, args.repeats // 10))
        full = len(model.widths) - 1
        out[f"batch{batch}"] = {fmt: {"ms": [1e3 * s[f"{fmt}_w{j}"] for j in widths],
                                      "over_own_full": [s[f"{fmt}_w{j}"] / s[f"{fmt}_w{full}"] for j in widths],
                                      "over_channels_last_full": [s[f"{fmt}_w{j}"] / s[f"last_w{full}"] for j in widths]}
                                for fmt in ("last", "first", "mixed")}
print(json.dumps(out, indent=1))
