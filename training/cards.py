"""Print the routes of several dynamic-ResNet model cards side by side as Markdown: each route's
accuracy on `val` (all of it, after the BatchNorm recalibration where the card kept it) and on `test`,
and the last card minus the one before it, in points. What an A/B's verdict reads. The rows are the
first card's routes (put the card with fewer routes first).

    python training/cards.py training/cifar10-resnet20-dynamic-v2 \
        training/cifar10-resnet20-dynamic-ab-v2-base training/cifar10-resnet20-dynamic-ab-v2-whole-uniform

Each argument is a `routing-env pretrain --out` folder (its `model_card.json`) or the card itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def routes(card: dict) -> dict[str, dict[str, float]]:
    """``{"val": {route: accuracy}, "test": {...}}`` of a card: `val` as the card's model was kept."""
    calibration = card["recalibration"]
    if calibration is None:
        raise ValueError(f"{card['command']!r}: this card has no `val` routes (a --heads-only run recalibrates nothing)")
    val = calibration["val_routes_after"] if calibration["kept"] else calibration["val_routes_before"]
    return {"val": {r["route"]: r["accuracy"] for r in val}, "test": {r["route"]: r["accuracy"] for r in card["routes_on_test"]}}


def markdown(names: list[str], cards: list[dict[str, dict[str, float]]]) -> str:
    """One row per route of the first card and their mean, per split the cards' accuracies and the last
    two's difference. The mean is over the first card's routes only, so that a card with more routes (a
    head after every block) is compared on the same ones; a card that lacks one of them is refused."""
    order = list(cards[0]["val"])
    for name, card in zip(names, cards):
        for split in ("val", "test"):
            missing = [r for r in order if r not in card[split]]
            if missing:
                raise ValueError(f"{name}'s card has no `{split}` accuracy for {missing}, which {names[0]}'s has")
    header = ["route"]
    for split in ("val", "test"):
        header += [f"`{split}`: {names[0]}", *names[1:], f"{names[-1]} − {names[-2]}"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for route in [*order, "mean of the routes"]:
        row = [route]
        for split in ("val", "test"):
            values = [sum(c[split][r] for r in order) / len(order) if route.startswith("mean") else c[split][route] for c in cards]
            row += [f"{v:.4f}" for v in values] + [f"{100 * (values[-1] - values[-2]):+.2f}"]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    paths = [Path(p) / "model_card.json" if Path(p).is_dir() else Path(p) for p in sys.argv[1:]]
    if len(paths) < 2:
        sys.exit("usage: python training/cards.py CARD_OR_RUN_FOLDER CARD_OR_RUN_FOLDER [...]")
    names = [p.parent.name.removeprefix("cifar10-resnet20-dynamic-") for p in paths]
    print(markdown(names, [routes(json.loads(p.read_text())) for p in paths]))
