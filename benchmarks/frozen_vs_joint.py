"""Frozen against jointly trained cascade on one Pareto plot (issue 13): per cascade, its members, its
confidence threshold, its oracle and the policy groups of its sweeps (mean ± std over seeds), from the
sweeps' ``results.json``; a second panel zooms on where the policies are.

    python benchmarks/frozen_vs_joint.py \
        --cascade frozen=benchmarks/results/cifar10-resnet-cascade-5/skip-blockdrop-ppo/results.json,benchmarks/results/cifar10-resnet-cascade-5/skip-dense-ppo/results.json,benchmarks/results/cifar10-resnet-cascade-5/gain/results.json \
        --cascade joint=benchmarks/results/cifar10-resnet-cascade-5-joint/skip-blockdrop-ppo/results.json,benchmarks/results/cifar10-resnet-cascade-5-joint/skip-dense-ppo/results.json,benchmarks/results/cifar10-resnet-cascade-5-joint/gain/results.json \
        --out benchmarks/results/cifar10-resnet-cascade-5-joint/frozen-vs-joint.png \
        --title "five members, frozen against co-trained (routing-env joint, lr 0.0002): ppo with skips, and the gain agent; CIFAR-10 test"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from routing_env.experiments.report import plot_cascades


def cascade_argument(text: str) -> tuple[str, list[Path]]:
    """``LABEL=results.json[,results.json…]``."""
    label, sep, paths = text.partition("=")
    if not sep or not label or not paths:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=results.json[,results.json...]")
    return label, [Path(p) for p in paths.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cascade", type=cascade_argument, action="append", required=True,
                        help="LABEL=results.json[,results.json...]: one backbone's sweeps (repeat per backbone)")
    parser.add_argument("--out", type=Path, required=True, help="the plot (.png)")
    parser.add_argument("--title", default="frozen against jointly trained cascade, CIFAR-10 test")
    parser.add_argument("--zoom", default="0.1,0.65,0.885,0.93", help="x0,x1,y0,y1 of the second panel ('' for none)")
    args = parser.parse_args()
    labels = [label for label, _ in args.cascade]
    if len(set(labels)) < len(labels):
        parser.error(f"--cascade labels {labels} repeat; each backbone needs its own")
    cascades = {label: [json.loads(p.read_text()) for p in paths] for label, paths in args.cascade}
    zoom = tuple(float(v) for v in args.zoom.split(",")) if args.zoom else None  # plot_cascades checks its shape
    for entry in plot_cascades(args.out, cascades, args.title, zoom):
        print(entry)


if __name__ == "__main__":
    main()
