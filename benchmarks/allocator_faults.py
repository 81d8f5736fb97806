"""Page faults and latency of routed inference in a process of its own, under glibc's default
allocator settings and with freed memory kept (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``).

    ROUTING_ENV_DATA=.data python benchmarks/allocator_faults.py [--threads 2] [--calls 60] [--rounds 2]   # one JSON object

Why: at batch 64 a ResNet-20 block's activations are megabytes. glibc serves an allocation that large
with fresh pages (``mmap``, or a heap top it gave back with ``trim``), so a process that does nothing
but inference can fault in every activation on every call. `routing-env bench` runs in a process whose
heap holds other data and does not show it; a deployment may. Each setting runs in fresh child
processes, alternating (the settings are read when the C library starts): the shipped dynamic ResNet-20's full path
and its width-0.5 route (``RoutedModel.route_module``), and ``RoutedModel`` with a fixed rule choosing
width 0.5, at batch 1 and 64; per call the minor page faults (``getrusage``) and the median latency
after 10 warm-up calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = {
    "glibc_default": {},
    "freed_memory_kept": {"MALLOC_MMAP_THRESHOLD_": "2000000000", "MALLOC_TRIM_THRESHOLD_": "2000000000"},
}


def child(threads: int, calls: int) -> dict:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    from routing_env.bench import HalfWidthPolicy
    from routing_env.pretrained import load
    from routing_env.routed import RoutedModel

    backbone = load("cifar10-resnet20-dynamic")
    n, last = backbone.spec.num_stages, len(backbone.spec.widths) - 1
    routed = RoutedModel(backbone, HalfWidthPolicy(n))
    runs = {"full": routed.route_module([last] * n), "half": routed.route_module([1] * n), "routed_half": routed}
    out: dict = {}
    with torch.inference_mode():
        for b in (1, 64):
            x = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8)
            for name, module in runs.items():
                for _ in range(10):
                    module(x)
                faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
                for _ in range(calls):
                    began = time.perf_counter()
                    module(x)
                    times.append(time.perf_counter() - began)
                out[f"{name}_batch{b}_faults_per_call"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls
                out[f"{name}_batch{b}_ms"] = sorted(times)[calls // 2] * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2, help="child processes per setting, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.threads, args.calls)))
        return
    from routing_env.provenance import provenance

    out: dict = {"threads": args.threads, "calls": args.calls, "settings": SETTINGS, "provenance": provenance()}
    for round_ in range(args.rounds):  # alternating, so that the machine's drift hits both settings
        for name, env in SETTINGS.items():
            result = subprocess.run([sys.executable, __file__, "--child", "--threads", str(args.threads), "--calls", str(args.calls)],
                                    env={**os.environ, **env}, check=True, capture_output=True, text=True)
            out.setdefault(name, []).append(json.loads(result.stdout))
    default, kept = out["glibc_default"], out["freed_memory_kept"]
    out["default_over_kept_ms"] = [{k[:-3]: d[k] / e[k] for k in d if k.endswith("_ms")} for d, e in zip(default, kept)]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
