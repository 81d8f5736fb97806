"""Print the per-epoch progress table of a `routing-env pretrain --quiet` log as Markdown.

    python training/progress.py training/cifar10-resnet20-dynamic.log

Each epoch line reads ``... epoch E/N: loss L, train acc A, val acc V, M min; val routes NAME ACC, ...``
(`--monitor`); the table has one column per monitored route, in the log's order.
"""

from __future__ import annotations

import re
import sys

EPOCH = re.compile(r"epoch (\d+)/\d+: loss ([\d.]+), .*?, ([\d.]+) min; val routes (.*)$")
ROUTE = re.compile(r"([a-z][a-z .\d]*?) (\d\.\d+)(?:, |$)")


def rows(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The route names and one row (epoch, minutes, loss, route accuracies) per epoch line."""
    names: list[str] = []
    table = []
    for line in lines:
        match = EPOCH.search(line)
        if not match:
            continue
        routes = ROUTE.findall(match.group(4))
        names = names or [name for name, _ in routes]
        table.append([match.group(1), match.group(3), match.group(2), *(acc for _, acc in routes)])
    return names, table


def markdown(names: list[str], table: list[list[str]]) -> str:
    header = ["epoch", "elapsed min", "train loss", *names]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as log:
        print(markdown(*rows(log.read().splitlines())))
