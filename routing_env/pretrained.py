"""Pretrained backbones shipped in ``pretrained/<name>/``, loaded by name with checked sha256.

Each folder holds ``manifest.json``::

    {"name": "cifar10-resnet-cascade", "kind": "cascade", "dataset": "cifar10", "num_classes": 10,
     "members": [{"model": "resnet8", "weights": "resnet8.pt", "sha256": "…"}, …]}

plus the weights (plain state_dicts, loaded with ``weights_only=True``), model cards, and feature
caches of ``val`` and ``test`` (so that the cascade works with no image data at all).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .backbones.cascade import Cascade, FeatureCache
from .backbones.dynamic import DynamicResNetBackbone
from .backbones.resnet import CLASSIFIERS, DYNAMIC, recalibrate_on_images
from .checkpoints import atomic_write_text, file_sha256, load_state_dict, read_json, save_state_dict, write_json
from .data import load_split
from .validation import check_number


def root() -> Path:
    """``$ROUTING_ENV_PRETRAINED``, else the repository's ``pretrained/`` folder."""
    env = os.environ.get("ROUTING_ENV_PRETRAINED")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "pretrained"


MANIFEST_KEYS = ("name", "kind", "dataset", "num_classes")
"""What every ``manifest.json`` names (a cascade adds ``members``, a dynamic ResNet ``model``, ``weights``, ``sha256``)."""


def scan() -> tuple[dict[str, list[tuple[Path, dict[str, Any]]]], dict[Path, str]]:
    """Every pretrained model found, by the name its manifest gives: each folder that holds one (which
    need not be named after it: ``package_*(..., out=)``) and its manifest; and every manifest that
    could not be read (its path, and why). Neither a broken manifest nor more than one folder for a
    name is refused here, only where that name is loaded (:func:`folder_of`), so that the others load."""
    found: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    broken: dict[Path, str] = {}
    for manifest in sorted(root().glob("*/manifest.json")):
        try:
            data = read_json(manifest)
        except ValueError as e:
            broken[manifest] = str(e)
            continue
        missing = [key for key in MANIFEST_KEYS if not isinstance(data, dict) or key not in data]
        if missing:
            broken[manifest] = f"{manifest} lacks {missing}; a manifest names at least {list(MANIFEST_KEYS)}"
            continue
        found.setdefault(data["name"], []).append((manifest.parent, data))
    return found, broken


def manifests() -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """The readable manifests of :func:`scan`, by name."""
    return scan()[0]


def available() -> dict[str, dict[str, Any]]:
    """Manifests of every pretrained model found, by name."""
    return {name: entries[0][1] for name, entries in manifests().items()}


def model_summary(folder: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """One model of a pretrained folder (a cascade member, or a dynamic ResNet's manifest): its name,
    test accuracy and MACs, from its model card where one is shipped (:func:`base_card`: the card is
    the record, and a co-trained cascade's manifest leaves accuracy to the cards), else from the manifest."""
    card = base_card(folder, entry) if "weights" in entry else None
    card = card if isinstance(card, dict) else {}
    return {"model": entry.get("model"), "test_accuracy": card.get("test_accuracy", entry.get("test_accuracy")),
            "macs": card.get("macs", entry.get("macs"))}


def folder_of(name: str) -> tuple[Path, dict[str, Any]] | None:
    """The folder and manifest of the pretrained model ``name``: ``None`` if no readable manifest names
    it and none is unreadable, else a ``ValueError`` naming the unreadable ones (one of them may be
    ``name``'s); a ``ValueError`` naming the folders when several claim it."""
    found, broken = scan()
    entries = found.get(name)
    if not entries:
        if broken:  # the model asked for may be the one whose manifest is broken: say why it is not found
            raise ValueError(f"unknown pretrained model {name!r}; expected one of {sorted(found)} (in {root()}); "
                             f"these manifests could not be read: {'; '.join(broken.values())}")
        return None
    if len(entries) > 1:
        raise ValueError(f"{' and '.join(str(folder / 'manifest.json') for folder, _ in entries)} all name {name!r}: "
                         "rename all but one (its manifest's name)")
    return entries[0]


def package_folder(name: str, out: str | Path | None) -> Path:
    """Where ``package_*`` writes the model ``name``: ``out``, else ``<root>/<name>``; ``ValueError`` if
    another folder already holds a pretrained model ``name`` (a package must not make a name ambiguous)."""
    folder = Path(out) if out is not None else root() / name
    for other, _ in manifests().get(name, []):
        if other.resolve() != folder.resolve():
            raise ValueError(f"{other / 'manifest.json'} already names {name!r}; package under another name or into that folder")
    return folder


def cascade_folder(name: str) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of the pretrained cascade ``name``, found as :func:`load` finds it (two
    folders claiming it are refused, not picked between); ``ValueError`` naming the cascades there are
    if ``name`` is none of them."""
    entry = folder_of(name)
    if entry is None or entry[1]["kind"] != "cascade":
        cascades = sorted(k for k, m in available().items() if m["kind"] == "cascade")
        raise ValueError(f"unknown pretrained cascade {name!r}; expected one of {cascades}")
    check_kind_keys(*entry)
    return entry


KINDS = ("cascade", "dynamic-resnet")


def inside(folder: Path, relative: str) -> Path:
    """``folder / relative``, refused (``ValueError``) if it resolves outside ``folder``: a manifest
    names files of its own folder, never elsewhere on the machine."""
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ValueError(f"{folder / 'manifest.json'} names {relative!r}, which lies outside its folder")
    return path


def load(name: str) -> Cascade | DynamicResNetBackbone:
    """The pretrained model ``name``; every weight file's sha256 is checked against the manifest, and
    so is every shipped feature cache the manifest lists (``caches``: file name → sha256)."""
    entry = folder_of(name)
    if entry is None:
        raise ValueError(f"unknown pretrained model {name!r}; expected one of {sorted(manifests())} (in {root()})")
    folder, manifest = entry
    problem = manifest_problem(folder, manifest)
    if problem is not None:
        raise ValueError(problem)
    if manifest["kind"] == "dynamic-resnet":
        model = DYNAMIC[manifest["model"]](manifest["num_classes"], exits=manifest.get("exits", "stage"), rescale=bool(manifest.get("rescale", False)))
        model.load_state_dict(load_state_dict(inside(folder, manifest["weights"]), sha256=manifest["sha256"]))
        return DynamicResNetBackbone(model, name)
    members = []
    for member in manifest["members"]:
        model = CLASSIFIERS[member["model"]](manifest["num_classes"])
        model.load_state_dict(load_state_dict(inside(folder, member["weights"]), sha256=member["sha256"]))
        members.append(model)
    names = [member["model"] for member in manifest["members"]]
    caches = {inside(folder, file).name: digest for file, digest in manifest.get("caches", {}).items()}
    return Cascade(members, (3, 32, 32), name=name, shipped_dir=folder, member_names=names, shipped_sha256=caches)


def manifest_problem(folder: Path, manifest: dict[str, Any]) -> str | None:
    """Why :func:`load` refuses ``manifest`` before it reads any weights (a kind this version does not
    load, a key its kind needs, a model it does not know), or ``None``: one rule for ``load`` and for
    the catalogue (``routing-env backbones``), which lists what it would refuse."""
    where = folder / "manifest.json"
    if manifest["kind"] not in KINDS:
        return f"pretrained model {manifest['name']!r} ({where}) has kind {manifest['kind']!r}; this version loads {list(KINDS)}"
    try:
        check_kind_keys(folder, manifest)
    except ValueError as e:
        return str(e)
    dynamic = manifest["kind"] == "dynamic-resnet"
    known = DYNAMIC if dynamic else CLASSIFIERS
    unknown = [model for model in ([manifest["model"]] if dynamic else [m["model"] for m in manifest["members"]]) if model not in known]
    if unknown:
        return f"{where}: unknown model {unknown[0]!r}; expected one of {sorted(known)}"
    return None


KIND_KEYS = {"dynamic-resnet": ("model", "weights", "sha256"), "cascade": ("members",)}
"""What a manifest of each kind names besides :data:`MANIFEST_KEYS`; a cascade's every member names
:data:`MEMBER_KEYS`."""

MEMBER_KEYS = ("model", "weights", "sha256")


def check_kind_keys(folder: Path, manifest: dict[str, Any]) -> None:
    """Refuse a manifest that lacks what its kind needs, naming the file and the keys (a hand-edited
    or truncated manifest raised a bare ``KeyError``)."""
    where = folder / "manifest.json"
    missing = [key for key in KIND_KEYS.get(manifest["kind"], ()) if key not in manifest]
    if missing:
        raise ValueError(f"{where}: a {manifest['kind']} manifest needs {list(KIND_KEYS[manifest['kind']])}; it lacks {missing}")
    if manifest["kind"] == "cascade":
        members = manifest["members"]
        if not isinstance(members, list) or not members or not all(isinstance(m, dict) and all(k in m for k in MEMBER_KEYS) for m in members):
            raise ValueError(f"{where}: 'members' must be a non-empty list of {{{', '.join(MEMBER_KEYS)}}} objects, got {members!r}")


def build_caches(cascade: Cascade, dataset: str, data_root: str | None) -> tuple[dict[str, FeatureCache], dict[str, str]]:
    """Build ``cascade``'s ``val`` and ``test`` feature caches in its ``cache_dir``. Returns the caches
    by split (for the cards written beside them, so nothing is read twice) and what a manifest's
    ``caches`` lists: each file's sha256 by name. Only these two: a folder packaged again may still
    hold the caches of the weights it held before (the names carry the weights' sha256)."""
    caches = {split: cascade.feature_cache(dataset, split, data_root) for split in ("val", "test")}
    paths = [cascade.cache_path(dataset, split) for split in ("val", "test")]
    return caches, {path.name: file_sha256(path) for path in paths}


def run_files(run: Path, card: dict[str, Any]) -> dict[str, bytes]:
    """A ``pretrain`` run's weights and both its model cards, by the names a package keeps them under
    (``<model>.pt``, ``.model_card.json``, ``.MODEL_CARD.md``): read whole before anything is written,
    so that a run that lacks one leaves the package it would replace as it was."""
    model = card["model"]
    return {f"{model}.pt": (run / card["weights"]).read_bytes(), f"{model}.model_card.json": (run / "model_card.json").read_bytes(),
            f"{model}.MODEL_CARD.md": (run / "MODEL_CARD.md").read_bytes()}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (name → content) into ``folder``, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for file, data in files.items():
        atomic_write_text(folder / file, data)


def package_cascade(
    name: str, runs: list[str | Path], dataset: str = "cifar10", data_root: str | None = None, out: str | Path | None = None
) -> Path:
    """Assemble ``pretrained/<name>/`` from ``pretrain`` run folders (cheapest first).

    Copies each run's ``weights.pt`` (as ``<model>.pt``) and model cards, writes ``manifest.json``
    with the sha256 of each weight file, and builds the ``val`` and ``test`` feature caches.
    """
    folder = package_folder(name, out)
    runs = [Path(run) for run in runs]
    cards = [read_json(run / "model_card.json") for run in runs]
    names = [card["model"] for card in cards]
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:  # each member is stored as <model>.pt: a second would overwrite the first
        raise ValueError(f"members {names} repeat the architecture {repeated}; a cascade's members are stored by model name")
    states = []
    for run, card in zip(runs, cards):  # every run is checked before anything is written
        if card["dataset"] != dataset:
            raise ValueError(f"{run} was trained on {card['dataset']!r}, not {dataset!r}")
        if card["model"] not in CLASSIFIERS:
            raise ValueError(f"{run} holds {card['model']!r}, not a cascade member ({sorted(CLASSIFIERS)})")
        states.append(load_state_dict(run / card["weights"], card["sha256"]))
    classes = [int(state["fc.weight"].shape[0]) for state in states]
    if len(set(classes)) != 1:
        raise ValueError(f"the members' heads have {classes} classes; a cascade's members classify the same classes")
    models = []
    for card, state in zip(cards, states):
        model = CLASSIFIERS[card["model"]](classes[0])
        model.load_state_dict(state)
        models.append(model)
    for split in ("val", "test"):  # and the images of the caches are there
        load_split(dataset, split, data_root)
    files = {file: data for run, card in zip(runs, cards) for file, data in run_files(run, card).items()}
    write_files(folder, files)
    members = [{"model": card["model"], "weights": f"{card['model']}.pt", "sha256": card["sha256"], "test_accuracy": card["test_accuracy"],
                "macs": card["macs"]} for card in cards]
    _, caches = build_caches(Cascade(models, (3, 32, 32), name=name, cache_dir=folder), dataset, data_root)
    write_json(folder / "manifest.json", {"name": name, "kind": "cascade", "dataset": dataset, "num_classes": classes[0], "members": members, "caches": caches})
    return folder


def package_dynamic(name: str, run: str | Path, out: str | Path | None = None) -> Path:
    """Assemble ``pretrained/<name>/`` from one ``pretrain`` run folder of a dynamic ResNet: its weights
    (as ``<model>.pt``), model cards and ``manifest.json`` with the sha256."""
    run = Path(run)
    folder = package_folder(name, out)
    card = read_json(run / "model_card.json")  # everything is read and checked before anything is written
    model = card["model"]
    if model not in DYNAMIC:
        raise ValueError(f"{run} holds {model!r}, not a dynamic ResNet ({sorted(DYNAMIC)})")
    num_classes = load_state_dict(run / card["weights"], card["sha256"])[f"heads.{card['num_blocks']}.fc.weight"].shape[0]
    files = run_files(run, card)
    manifest = {
        "name": name,
        "kind": "dynamic-resnet",
        "dataset": card["dataset"],
        "num_classes": int(num_classes),
        "model": model,
        "exits": card["exits"],
        "rescale": bool(card.get("rescale", False)),
        "weights": f"{model}.pt",
        "sha256": card["sha256"],
        "test_accuracy": card["test_accuracy"],
        "macs": card["macs"],
    }
    write_files(folder, files)
    write_json(folder / "manifest.json", manifest)
    return folder


def split_members(state: dict[str, torch.Tensor], count: int) -> list[dict[str, torch.Tensor]]:
    """A cascade's ``backbone.pt`` (its classifiers' ``ModuleList`` state_dict) as one state_dict per member."""
    found = sorted({int(key.partition(".")[0]) for key in state})
    if found != list(range(count)):
        raise ValueError(f"the backbone holds members {found}, the cascade has {count} (0..{count - 1}): "
                         "it was co-trained from another cascade")
    members: list[dict[str, torch.Tensor]] = [{} for _ in range(count)]
    for key, value in state.items():
        index, _, rest = key.partition(".")
        members[int(index)][rest] = value
    return members


def package_cotrained(
    name: str,
    base: str,
    backbone: str | Path,
    data_root: str | None = None,
    out: str | Path | None = None,
    note: str = "",
    recalibrate: int = 0,
    allow_stopped: bool = False,
) -> Path:
    """Assemble ``pretrained/<name>/`` from a co-trained cascade: the members of the pretrained cascade
    ``base`` with the weights of ``backbone`` (a ``backbone.pt`` that ``train`` or ``joint`` wrote),
    frozen, with a new manifest (sha256 of each member), ``val``/``test`` feature caches and a model card
    per member (its accuracy, where it started, and the joint run's record when ``joint.json`` lies
    beside ``backbone``: :func:`joint_run_record`); ``note`` (how it was trained) goes into the manifest
    and the cards. Everything it reads is read and checked before anything is written.

    ``recalibrate``: re-estimate each member's BatchNorm statistics over this many augmented ``train``
    batches of 256 (seeded) first. Co-training updates the members in eval mode (an episode's few
    instances make no batch statistics), so their running statistics are those of the weights they
    started from.

    ``allow_stopped``: package a run whose ``joint.json`` says it stopped before its last epoch (by a
    time limit or a kill); refused by default, since its cards would read as the finished run's."""
    check_number("recalibrate", recalibrate, low=0, integer=True)
    entry = cascade_folder(base)
    manifest = entry[1]
    backbone = Path(backbone)
    states = split_members(load_state_dict(backbone), len(manifest["members"]))
    record = joint_run_record(backbone, base)
    if record.get("stopped") and not allow_stopped:
        raise ValueError(f"{backbone.parent / 'joint.json'} says the run stopped after epoch {record.get('epochs')} of "
                         f"{record['spec'].get('epochs')}: resume it to the end, or pass allow_stopped=True to package it as it is")
    base_cards = [base_card(entry[0], member) for member in manifest["members"]]
    models = []
    for member, state in zip(manifest["members"], states):  # every member's weights fit before anything is written
        model = CLASSIFIERS[member["model"]](manifest["num_classes"])
        model.load_state_dict(state)
        models.append(model)
    for split in ("val", "test"):  # and the images of the caches are there
        load_split(manifest["dataset"], split, data_root)
    images = load_split(manifest["dataset"], "train", data_root).inputs if recalibrate else None
    folder = package_folder(name, out)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    members = []
    for member, model in zip(manifest["members"], models):
        if images is not None:
            recalibrate_on_images(model, images, recalibrate, generator)
        path = folder / Path(member["weights"]).name  # the base's file names: unique within a cascade
        save_state_dict(model.state_dict(), path)
        members.append({"model": member["model"], "weights": path.name, "sha256": file_sha256(path), "macs": member.get("macs")})
    new = {"name": name, "kind": "cascade", "dataset": manifest["dataset"], "num_classes": manifest["num_classes"],
           "members": members, "cotrained_from": base, "backbone_sha256": file_sha256(backbone), "note": note,
           "batchnorm_recalibrated_on": f"{recalibrate} augmented train batches of 256" if recalibrate else None}
    cascade = Cascade(models, (3, 32, 32), name=name, cache_dir=folder)
    caches, new["caches"] = build_caches(cascade, manifest["dataset"], data_root)
    write_cotrained_cards(folder, new, cascade, caches, base_cards, record)
    write_json(folder / "manifest.json", new)
    return folder


def base_card(base_folder: Path, member: dict[str, Any]) -> dict[str, Any] | None:
    """The model card of a base cascade's ``member`` (named as its weights are), if it has one."""
    path = inside(base_folder, f"{Path(member['weights']).stem}.model_card.json")
    return read_json(path) if path.is_file() else None


def write_cotrained_cards(folder: Path, manifest: dict[str, Any], cascade: Cascade, caches: dict[str, FeatureCache],
                          base_cards: list[dict[str, Any] | None], record: dict[str, Any]) -> None:
    """A model card per member of the co-trained cascade in ``folder`` (JSON and Markdown, named as its
    weights are), from its ``val``/``test`` ``caches``, the base's cards and the joint run's ``record``."""
    for position, (member, model) in enumerate(zip(manifest["members"], cascade.module)):
        stem = Path(member["weights"]).stem
        card = cotrained_card(manifest, position, model, int(cascade.member_macs[position]), caches, base_cards[position], record)
        write_json(folder / f"{stem}.model_card.json", card)
        atomic_write_text(folder / f"{stem}.MODEL_CARD.md", cotrained_card_markdown(card))


def joint_run_record(backbone: Path, base: str) -> dict[str, Any]:
    """What the run folder of a co-trained ``backbone`` says about its training: ``joint.json``'s spec,
    per-epoch history and whether it started from random weights (``joint --from-scratch``), and the
    provenance (machine, versions, commit) ``config.json`` took when the last segment began. Empty where
    there is no ``joint.json`` (a ``train`` run, or a ``backbone.pt`` copied elsewhere); ``ValueError``
    where the record is another run's: its ``backbone.pt`` is not ``backbone``, or it co-trained
    another cascade than ``base``."""
    run = backbone.parent
    if not (run / "joint.json").is_file():
        return {}
    joint = read_json(run / "joint.json")
    spec = joint.get("spec") or {}
    if spec.get("backbone") != base:
        raise ValueError(f"{run / 'joint.json'} co-trained {spec.get('backbone')!r}, not {base!r}")
    mine = run / "backbone.pt"
    if mine.resolve() != backbone.resolve() and (not mine.is_file() or file_sha256(mine) != file_sha256(backbone)):
        raise ValueError(f"{run / 'joint.json'} is the record of {mine}, not of {backbone}")
    config = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    return {"spec": spec, "epochs": joint.get("epochs"), "history": joint.get("history") or [], "hours": joint.get("hours"),
            "from_scratch": "dense_epochs" in spec, "stopped": joint.get("stopped"), "provenance": config.get("provenance"),
            "start_weights_sha256": joint.get("start_weights_sha256")}


def cotrained_card(manifest: dict[str, Any], position: int, model: torch.nn.Module, macs: int,
                   caches: dict[str, FeatureCache], base: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
    """The model card of a co-trained cascade's member ``position``: its accuracy on each cached split
    (what ``evaluate --agent fixed`` reproduces), where it started (the base cascade's card ``base``, or
    random weights) and how it was co-trained (the joint run's ``record``, the note, the recalibration).
    ``training_provenance`` is the joint run's machine and commit; ``card_provenance`` the process that
    wrote this card."""
    from .provenance import provenance

    member = manifest["members"][position]
    accuracy = {split: float((cache.logits[position].argmax(-1) == cache.labels).mean()) for split, cache in caches.items()}
    seconds = sum(h.get("seconds", 0.0) for h in record.get("history", []))
    hours = record.get("hours") or (seconds / 3600 if seconds else None)
    scratch = bool(record.get("from_scratch"))
    started = (f"random weights (the architecture of {manifest['cotrained_from']}'s {member['model']})" if scratch
               else f"{manifest['cotrained_from']}'s {member['model']}")
    return {
        "model": member["model"],
        "dataset": manifest["dataset"],
        "trained_on": "train split (45,000 images; val = 5,000 held out, docs/design.md §8), co-trained with the cascade's selection module",
        "started_from": started,
        "test_accuracy": accuracy["test"],
        "val_accuracy": accuracy["val"],
        "macs": macs,
        "macs_unit": "multiply-accumulates per 32x32 image, FlopCounterMode FLOPs / 2",
        "parameters": sum(p.numel() for p in model.parameters()),
        "cotrained_from": manifest["cotrained_from"],
        "from_scratch": scratch,
        "base_test_accuracy": None if scratch else (base or {}).get("test_accuracy"),
        "base_val_accuracy": None if scratch else (base or {}).get("val_accuracy"),
        "note": manifest["note"],
        "batchnorm_recalibrated_on": manifest["batchnorm_recalibrated_on"],
        "joint": {key: record.get(key) for key in ("spec", "epochs", "history", "stopped", "start_weights_sha256")} if record else None,
        "wall_time_hours": round(hours, 3) if hours else None,
        "training_provenance": record.get("provenance"),
        "card_provenance": provenance(),
        "weights": member["weights"],
        "sha256": member["sha256"],
    }


def cotrained_card_markdown(card: dict[str, Any]) -> str:
    def shown(value: Any, form: str = "{}") -> str:
        return "–" if value is None else form.format(value)

    trained = card.get("training_provenance") or {}
    joint = card.get("joint") or {}
    return (
        f"# {card['model']} on {card['dataset']}, co-trained\n\n"
        f"| | |\n|---|---|\n"
        f"| test accuracy | {card['test_accuracy']:.4f} (before co-training: {shown(card['base_test_accuracy'], '{:.4f}')}) |\n"
        f"| val accuracy | {card['val_accuracy']:.4f} (before: {shown(card['base_val_accuracy'], '{:.4f}')}) |\n"
        f"| MACs | {card['macs']:,} ({card['macs_unit']}) |\n"
        f"| parameters | {card['parameters']:,} |\n"
        f"| started from | {card['started_from']} |\n"
        f"| joint epochs | {shown(joint.get('epochs'))} |\n"
        f"| wall time | {shown(card['wall_time_hours'], '{} h')} (the whole cascade's joint run) |\n"
        f"| machine | {shown(trained.get('cpu'))}, {shown(trained.get('cpu_count'))} cores, "
        f"{shown(trained.get('torch_threads'))} torch threads, commit {shown(trained.get('git_commit'))} |\n"
        f"| BatchNorm | {card['batchnorm_recalibrated_on'] or 'as co-trained'} |\n"
        f"| weights | `{card['weights']}`, sha256 `{card['sha256']}` |\n\n"
        f"How: {card['note'] or '–'}\n\n"
        f"Joint run: {shown(json.dumps(joint['spec']) if joint.get('spec') else None, '`{}`')}\n"
    )
