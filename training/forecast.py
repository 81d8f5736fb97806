"""What a dynamic-ResNet `pretrain` run's card would read on `val` if the run ended now: the
checkpoint's weights (the EMA's where the run keeps one, as the card's are), BatchNorm recalibrated as
the card's is (`pretrain.recalibrated`, kept only if it raises the mean route accuracy), and every static
route on the whole `val` split. The per-epoch monitor reads 1,000 images before any recalibration, so it
is no verdict; this is the card's own `val` verdict at the checkpoint's epoch, to tell whether a run is
on track against the ship rule (the card's mean route accuracy on `val`) long before it ends.

    ROUTING_ENV_DATA=.data python training/forecast.py training/cifar10-resnet20-dynamic-v4 [--batches N]

Prints one JSON object: the epoch, the mean route accuracy before and after recalibration, whether
it was kept, and each route's accuracy both ways. `--batches` (default: the run's `--recalibrate`)
trades time for noise. A run whose card is not recalibrated (`--heads-only`, `--recalibrate 0`) gets
the "before" figures only, as its card would. Run it when no training runs beside it, or it slows the
training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from routing_env.backbones.dynamic import route_report
from routing_env.checkpoints import load_state_dict
from routing_env.data import load_split
from routing_env.pretrain import PretrainArgs, build_model, recalibrated, subset


def checkpoint_model(state: dict[str, Any], args: PretrainArgs, num_classes: int) -> torch.nn.Module:
    """The model a card would be written from at this checkpoint: the EMA's where the run keeps one.
    Built without ``--init`` (the checkpoint holds every weight), so a moved init file does not matter."""
    model = build_model(dataclasses.replace(args, init=None, heads_only=False), num_classes).to(memory_format=torch.channels_last)
    model.load_state_dict(state["model"])
    if args.ema:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
        ema.load_state_dict(state["ema"])
        model = ema.module
    return model.eval()


def forecast(run: Path, batches: int | None = None, data_root: str | None = None) -> dict[str, Any]:
    """The card's `val` figures of ``run`` (a `pretrain --out` folder) at its checkpoint's epoch."""
    state = load_state_dict(run / "checkpoint.pt")
    args = PretrainArgs(**json.loads(state["args"]))
    if not args.dynamic:
        raise ValueError(f"{run} trains {args.backbone!r}, not a dynamic ResNet: its card has no routes to forecast")
    if batches is not None:
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"--batches must be an integer >= 1 (no batches would reset every BatchNorm), got {batches!r}")
        args = dataclasses.replace(args, recalibrate=batches)
    train = subset(load_split(args.dataset, "train", data_root), args.subset)
    val = subset(load_split(args.dataset, "val", data_root), args.subset)
    model = checkpoint_model(state, args, train.num_classes)
    out = {"run": str(run), "epoch": int(state["epoch"]), "epochs": args.epochs}
    if not args.recalibrate or args.heads_only:  # pretrain does not recalibrate these cards either
        routes = route_report(model, val)
        return {**out, "val_mean_route_accuracy_before": round(sum(r["accuracy"] for r in routes) / len(routes), 4),
                "val_routes_before": {r["route"]: round(r["accuracy"], 4) for r in routes}}
    _, report = recalibrated(model, args, train.inputs, val)
    by_route = {when: {r["route"]: round(r["accuracy"], 4) for r in report[f"val_routes_{when}"]} for when in ("before", "after")}
    return {**out, "batches": args.recalibrate,
            "val_mean_route_accuracy_before": report["val_mean_route_accuracy_before"],
            "val_mean_route_accuracy_after": report["val_mean_route_accuracy_after"], "kept": report["kept"],
            "val_routes_before": by_route["before"], "val_routes_after": by_route["after"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `routing-env pretrain --out` folder of a dynamic ResNet (its checkpoint.pt)")
    parser.add_argument("--batches", type=int, help="recalibration batches (default: the run's --recalibrate)")
    parser.add_argument("--data-root", help="image data root (else ROUTING_ENV_DATA)")
    args = parser.parse_args()
    print(json.dumps(forecast(args.run, args.batches, args.data_root), indent=1))


if __name__ == "__main__":
    main()
