"""Print a training run's per-epoch progress table as Markdown, from its log or its ``joint.json``.

    python training/progress.py training/cifar10-resnet20-dynamic.log
    python training/progress.py training/cifar10-resnet-cascade-joint-scratch-dense/joint.json --epochs 1,5,10,20,21

A `routing-env pretrain --quiet` log: each epoch line reads ``... epoch E/N: loss L, train acc A, val
acc V, M min`` and, for a dynamic backbone (`--monitor`), ``; val routes NAME ACC, ...``; the table
has one column per monitored route, in the log's order, or, for a plain backbone, the train and `val`
accuracy. A `routing-env joint --from-scratch` run's ``joint.json``: per epoch its phase
(dense or routed) and learning rate, its seconds, the share of `train` exiting at each member, the
last member's accuracy on what exited at it, each member on `val` and the greedy policy on `val`
(the training notes' tables); ``--epochs`` keeps the listed ones (default: all).
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

NUMBER = r"(?:[\d.]+|nan|inf)"
"""A figure as an f-string prints it, ``nan`` and ``inf`` included: a diverged epoch is a row, not a gap."""
EPOCH = re.compile(rf"epoch (\d+)/\d+: loss ({NUMBER}), train acc ([\d.]+), val acc ([\d.]+), ([\d.]+) min(?:; val routes (.*))?$")
ROUTE = re.compile(r"([a-z][a-z .\d]*?) (\d\.\d+)(?:, |$)")


def rows(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The column names after the loss and one row (epoch, minutes, loss, accuracies) per epoch line:
    the monitored routes' accuracies where the log has them (a dynamic backbone), else the train and
    `val` accuracy (a plain one)."""
    names: list[str] = []
    table = []
    for line in lines:
        match = EPOCH.search(line)
        if not match:
            continue
        epoch, loss, train, val, minutes, monitored = match.groups()
        routes = ROUTE.findall(monitored) if monitored else [("train acc", train), ("val acc", val)]
        names = names or [name for name, _ in routes]
        table.append([epoch, minutes, loss, *(acc for _, acc in routes)])
    return names, table


def markdown(names: list[str], table: list[list[str]]) -> str:
    header = ["epoch", "elapsed min", "train loss", *names]
    return render(header, table)


def render(header: list[str], table: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(out)


def joint_rows(summary: dict[str, Any], epochs: set[int] | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and one row per epoch of a from-scratch joint run's ``joint.json`` (``epochs``: only those)."""
    names = summary["members"]
    header = ["epoch", "phase", "s", f"share of `train` exiting at {' / '.join(names)}",
              f"{names[-1]}'s accuracy on what exited at it", "members on `val`", "greedy policy on `val`"]
    table = []
    for row in summary["history"]:
        if epochs is not None and row["epoch"] not in epochs:
            continue
        last = row["accuracy_at_exit"][-1]
        val = row["val"]
        table.append([str(row["epoch"]), f"{'dense' if row['dense'] else 'routed'}, lr {row['lr']:.3f}", f"{row['seconds']:.0f}",
                      " / ".join(f"{share:.3f}" for share in row["exit_fraction"]), "–" if last is None else f"{last:.3f}",
                      " / ".join(f"{acc:.4f}" for acc in val["members"]),
                      f"{val['routed_accuracy']:.4f} at {val['routed_macs_fraction']:.3f}"])
    return header, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a pretrain log, or a joint run's joint.json")
    parser.add_argument("--epochs", help="joint.json: comma-separated epochs to print (default: all)")
    args = parser.parse_args(argv)
    if args.path.endswith(".json"):
        with open(args.path) as f:
            summary = json.load(f)
        epochs = {int(e) for e in args.epochs.split(",")} if args.epochs else None
        print(render(*joint_rows(summary, epochs)))
    else:
        with open(args.path) as log:
            print(markdown(*rows(log.read().splitlines())))


if __name__ == "__main__":
    main()
