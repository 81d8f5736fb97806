"""Issue 20: does ``torch.compile`` cut the latency of fixed routes (at batch 1, or ``--batch``), or of a policy's decision?

    python benchmarks/compiled_routes.py [--threads N] [--batch B] [--no-compile]   # prints one JSON object

The shipped dynamic ResNet-20's inference copy (RoutedModel.route_module) along the full path, width
0.5 and width 0.25 on every block, each eager and ``torch.compile``d (``dynamic=False``), and a policy
network of the agents' default size (PolicyNet, hidden 64) on one observation, eager, compiled, and
as its numba decision (``policy_fused``: routing_env.agents.fused.MLPDecision, what RoutedModel runs at batch 1); medians of interleaved rounds (routing_env.bench.interleaved_medians) on a random uint8 image.
"""
import argparse
import json
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=500)
parser.add_argument("--batch", type=int, default=1, help="the routes' batch size (the policy rows stay at one observation)")
parser.add_argument("--no-compile", action="store_true", help="only the eager and numba rows (no torch.compile: minutes less)")
args = parser.parse_args()
torch.set_num_threads(args.threads)
from routing_env.bench import HalfWidthPolicy, interleaved_medians, latency_policy_net  # noqa: E402
from routing_env.pretrained import load  # noqa: E402
from routing_env.provenance import provenance  # noqa: E402
from routing_env.routed import RoutedModel  # noqa: E402

backbone = load("cifar10-resnet20-dynamic")
n, last = backbone.spec.num_stages, len(backbone.spec.widths) - 1
routed = RoutedModel(backbone, HalfWidthPolicy(n))
full, half, quarter = routed.route_module([last] * n), routed.route_module([1] * n), routed.route_module([0] * n)
example, mlp = latency_policy_net(routed)
x = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)
fused = mlp.fused_decision()  # routing_env.agents.fused.MLPDecision: the same decision in one numba call
features, probs, mask = example["features"][0].numpy(), example["probs"][0].numpy(), example["action_mask"][0].numpy().astype(bool)
out = {"threads": torch.get_num_threads(), "batch": args.batch, "provenance": provenance()}
with torch.inference_mode():
    fns = {"full": lambda: full(x), "half": lambda: half(x), "quarter": lambda: quarter(x), "policy": lambda: mlp(example),
           "policy_fused": lambda: fused(features, probs, 0, 0.0, mask)}
    if not args.no_compile:
        t0 = time.time()
        cfull, chalf, cquarter = (torch.compile(m, dynamic=False) for m in (full, half, quarter))
        cmlp = torch.compile(mlp, dynamic=False)
        for f in (lambda: cfull(x), lambda: chalf(x), lambda: cquarter(x), lambda: cmlp(example)):
            f(); f()
        out["compile_seconds"] = time.time() - t0
        fns.update({"full_compiled": lambda: cfull(x), "half_compiled": lambda: chalf(x), "quarter_compiled": lambda: cquarter(x),
                    "policy_compiled": lambda: cmlp(example)})
    s = interleaved_medians(fns, args.repeats)
out.update({f"{k}_ms": v * 1e3 for k, v in s.items()})
out["half_over_full"] = s["half"] / s["full"]
out["policy_decisions_9_over_half_route"] = 9 * s["policy"] / s["half"]
out["policy_decisions_9_over_half_route_fused"] = 9 * s["policy_fused"] / s["half"]
if not args.no_compile:
    out["half_over_full_compiled"] = s["half_compiled"] / s["full_compiled"]
    out["quarter_over_full_compiled"] = s["quarter_compiled"] / s["full_compiled"]
    out["policy_decisions_9_over_half_route_compiled"] = 9 * s["policy_compiled"] / s["half_compiled"]
print(json.dumps(out, indent=1))
