"""The training notes' per-epoch tables of the from-scratch joint runs are what
``training/progress.py`` prints from each run's committed ``joint.json``: a table edited by hand, or
a run resumed without its table updated, fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import load_module

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "training" / "README.md"


def progress_module():
    return load_module(ROOT / "training" / "progress.py")


def joint_tables() -> dict[str, list[list[str]]]:
    """Each ``## `run` …`` section's per-epoch joint table (the rows under a header that starts
    ``| epoch | phase |``), by run name."""
    tables: dict[str, list[list[str]]] = {}
    run, rows = None, None
    for line in NOTES.read_text().splitlines():
        section = re.match(r"## `([^`]+)`", line)
        if section:
            run, rows = section.group(1), None
        elif line.startswith("| epoch | phase |") and run is not None:
            rows = tables.setdefault(run, [])
        elif rows is not None and line.startswith("| ") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows is not None and not line.startswith("|"):
            rows = None
    return tables


TABLES = joint_tables()


def test_the_notes_have_the_joint_tables() -> None:
    assert {"cifar10-resnet-cascade-joint-scratch-expected", "cifar10-resnet-cascade-joint-scratch-dense"} <= TABLES.keys()


@pytest.mark.parametrize("run", sorted(TABLES))
def test_each_joint_table_is_what_progress_prints_from_the_runs_joint_json(run: str) -> None:
    summary = json.loads((ROOT / "training" / run / "joint.json").read_text())
    written = TABLES[run]
    assert written, f"the notes' table of {run} has no rows"
    _, printed = progress_module().joint_rows(summary, {int(row[0]) for row in written})
    assert written == printed


def test_progress_reads_plain_and_dynamic_pretrain_logs() -> None:
    """A plain backbone's log gives train and `val` accuracy columns, a dynamic one's its monitored routes."""
    plain = ["resnet56 epoch 84/160: loss 0.6660, train acc 0.9295, val acc 0.9344, 156.6 min",
             "resnet56: stopped after epoch 84 of 160 (--time-limit 140 min); go on with --resume"]
    dynamic = ["resnet20-dynamic epoch 3/100: loss 4.1, train acc 0.80, val acc 0.88, 12.5 min; "
               "val routes full 0.901, width 0.25 0.854, random skip 0.5 0.690"]
    progress = progress_module()
    assert progress.rows(plain) == (["train acc", "val acc"], [["84", "156.6", "0.6660", "0.9295", "0.9344"]])
    assert progress.rows(dynamic) == (["full", "width 0.25", "random skip 0.5"], [["3", "12.5", "4.1", "0.901", "0.854", "0.690"]])


def test_progress_keeps_a_diverged_epoch_as_a_row() -> None:
    """``loss nan`` (what the f-string prints once a run diverges) is the epoch to see, not one to drop."""
    diverged = ["resnet110 epoch 12/160: loss nan, train acc 0.1000, val acc 0.1000, 30.2 min"]
    assert progress_module().rows(diverged)[1] == [["12", "30.2", "nan", "0.1000", "0.1000"]]


def test_forecast_at_a_runs_last_epoch_is_its_cards_recalibration(cifar_root: str, tmp_path: Path) -> None:
    """``training/forecast.py`` rebuilds what the card is written from (the EMA's weights, recalibrated
    with the card's seed): at the last epoch it must reproduce the card's `val` figures exactly."""
    from routing_env.pretrain import PretrainArgs, pretrain

    args = PretrainArgs(backbone="resnet20-dynamic", epochs=1, batch_size=32, subset=64, sandwich=1, ema=0.9, recalibrate=2)
    card = pretrain(args, tmp_path / "dyn", data_root=cifar_root, progress=False)
    forecast = load_module(ROOT / "training" / "forecast.py").forecast(tmp_path / "dyn", data_root=cifar_root)
    recalibration = card["recalibration"]
    assert (forecast["epoch"], forecast["epochs"], forecast["batches"]) == (1, 1, 2)
    for key in ("val_mean_route_accuracy_before", "val_mean_route_accuracy_after", "kept"):
        assert forecast[key] == recalibration[key], key
    for when in ("before", "after"):
        assert forecast[f"val_routes_{when}"] == {r["route"]: round(r["accuracy"], 4) for r in recalibration[f"val_routes_{when}"]}
    # a heads-only run's card is not recalibrated, so neither is its forecast: the weights as they are
    heads = PretrainArgs(backbone="resnet20-dynamic", init=str(tmp_path / "dyn" / "weights.pt"), exits="block", heads_only=True,
                         epochs=1, batch_size=32, subset=64, sandwich=1, monitor=0)
    assert pretrain(heads, tmp_path / "heads", data_root=cifar_root, progress=False)["recalibration"] is None
    (tmp_path / "dyn" / "weights.pt").rename(tmp_path / "moved.pt")  # the checkpoint holds every weight: init is not read
    plain = load_module(ROOT / "training" / "forecast.py").forecast(tmp_path / "heads", data_root=cifar_root)
    assert "val_routes_after" not in plain and "exit after block 1" in plain["val_routes_before"]
    assert plain["val_mean_route_accuracy_before"] == pytest.approx(sum(plain["val_routes_before"].values()) / len(plain["val_routes_before"]), abs=1e-4)
    with pytest.raises(ValueError, match="--batches must be an integer >= 1"):
        load_module(ROOT / "training" / "forecast.py").forecast(tmp_path / "dyn", batches=0, data_root=cifar_root)
    pretrain(PretrainArgs(backbone="resnet8", epochs=1, batch_size=32, subset=64), tmp_path / "plain", data_root=cifar_root, progress=False)
    with pytest.raises(ValueError, match="trains 'resnet8', not a dynamic ResNet"):
        load_module(ROOT / "training" / "forecast.py").forecast(tmp_path / "plain", data_root=cifar_root)


def cards_module():
    return load_module(ROOT / "training" / "cards.py")


def card_routes(run: str) -> dict[str, dict[str, float]]:
    return cards_module().routes(json.loads((ROOT / "training" / run / "model_card.json").read_text()))


def test_cards_compares_a_card_with_more_routes_on_the_first_cards_routes_only() -> None:
    """The joint-exits A/B's card has a head after every block; its mean in the table is over v3's eight
    stage routes, the verdict the training notes read (0.8156 on `val`), not over its fourteen."""
    cards = cards_module()
    stage, block = card_routes("cifar10-resnet20-dynamic-v3"), card_routes("cifar10-resnet20-dynamic-ab-joint-exits")
    assert len(block["val"]) > len(stage["val"])
    table = cards.markdown(["v3", "ab-joint-exits"], [stage, block])
    mean = next(line for line in table.splitlines() if line.startswith("| mean of the routes"))
    expected = sum(block["val"][r] for r in stage["val"]) / len(stage["val"])
    assert mean.split(" | ")[2] == f"{expected:.4f}"
    assert "exit after block 5" not in table
    with pytest.raises(ValueError, match="v3's card has no `val` accuracy for .*exit after block 1"):
        cards.markdown(["ab-joint-exits", "v3"], [block, stage])


def test_cards_refuses_a_heads_only_card_by_its_command() -> None:
    with pytest.raises(ValueError, match="--heads-only.*no `val` routes"):
        card_routes("cifar10-resnet20-dynamic-v3-exits")
