"""How long a CIFAR ResNet's training step takes on this CPU in fp32 and under bfloat16 autocast.

    python benchmarks/cpu_precision.py [--threads 2] [--batch 128] [--models resnet20,resnet56,resnet110,resnet20-dynamic-v2]

Issues 12 and 13 call ResNet-56/110 and from-scratch joint training GPU work: in fp32 a ResNet-56
epoch takes about 3 min on these 2 cores. A CPU with AVX512-BF16 (AMD Zen 4, Intel Sapphire Rapids
and later) runs bfloat16 convolutions natively, and ``pretrain --precision bf16`` and ``joint
--from-scratch`` (bf16 by default) use it on the CPU too. Per model, one training step (forward,
cross-entropy, backward, SGD with momentum; channels-last, train-mode BatchNorm) on a random batch in
each precision, as the median of interleaved rounds (:func:`routing_env.bench.interleaved_medians`),
and the epoch of 45,000 images it implies. ``resnet20-dynamic-v2`` is v2's
recipe instead (``pretrain --rescale --uniform-routes 0.5 --full-width-routes 0.3 --teacher resnet56``:
the sandwich rule's full path, narrowest and two random routes, and a ResNet-56 teacher's forward; v3,
the shipped one, adds ``--ema 0.999``, whose update this step does not time),
whose epoch took 5.5–6.6 min in fp32 on the older VMs. Prints one JSON object; the CPU's bf16 flags are in it,
since without them bf16 is emulated and slower, not faster.
"""

import argparse
import json
from pathlib import Path

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--models", default="resnet20,resnet56,resnet110")
parser.add_argument("--rounds", type=int, default=5)
args = parser.parse_args()
torch.set_num_threads(args.threads)
from routing_env.backbones.resnet import CLASSIFIERS, resnet20_dynamic, sandwich_loss  # noqa: E402
from routing_env.bench import interleaved_medians  # noqa: E402
from routing_env.provenance import provenance  # noqa: E402

TRAIN_IMAGES = 45_000


def bf16_flags() -> list[str]:
    """The CPU flags that make bfloat16 arithmetic native (none: autocast emulates it)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted({f for f in flags if "bf16" in f})


def training_step(name: str, precision: str):
    """One SGD step of a fresh ``name`` on a fixed random batch, in ``precision``."""
    torch.manual_seed(0)
    dynamic = name == "resnet20-dynamic-v2"
    model = (resnet20_dynamic(rescale=True) if dynamic else CLASSIFIERS[name]()).to(memory_format=torch.channels_last).train()
    teacher = CLASSIFIERS["resnet56"]().to(memory_format=torch.channels_last).eval().requires_grad_(False) if dynamic else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    generator = torch.Generator().manual_seed(0)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def loss_of_batch() -> torch.Tensor:
        if not dynamic:
            return torch.nn.functional.cross_entropy(model(x).float(), y)
        with torch.no_grad():
            taught = torch.softmax(teacher(x).float(), dim=1)
        return sandwich_loss(model, x, y, criterion, generator, sandwich=2, uniform=0.5, teacher=taught, full_width=0.3)[0]

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_of_batch()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


out = {"threads": torch.get_num_threads(), "batch": args.batch, "bf16_cpu_flags": bf16_flags(), "models": {}, "provenance": provenance()}
for name in args.models.split(","):
    seconds = interleaved_medians({p: training_step(name, p) for p in ("fp32", "bf16")}, repeats=args.rounds, rounds=args.rounds)
    out["models"][name] = {
        **{f"{p}_step_ms": 1e3 * s for p, s in seconds.items()},
        **{f"{p}_epoch_min": s * TRAIN_IMAGES / args.batch / 60 for p, s in seconds.items()},
        "bf16_speedup": seconds["fp32"] / seconds["bf16"],
    }
print(json.dumps(out, indent=1))
