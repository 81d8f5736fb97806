"""Plain state_dict checkpoints: hashing, atomic writes, checked loads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state_dict (names, dtypes, shapes and bytes, in key order)."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``, with the
    permissions a plain ``open`` would give it (``mkstemp`` makes the temporary file owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)  # the rename itself on disk, not only the contents
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _umask() -> int:
    """The process's umask (reading it means setting it; set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` through :func:`atomic_write`: a reader, or a run resumed after
    ``kill -9``, sees the old file or the new one, never half of one."""
    data = text.encode() if isinstance(text, str) else text
    atomic_write(path, lambda f: f.write(data))


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's content; a file that is not JSON (truncated, edited by hand) is a ``ValueError``
    naming it, not a bare ``JSONDecodeError``."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it, or delete it to have it written again") from None


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON, numpy's scalars and a ``torch.device`` written as the Python
    value or name they stand for (an option given as ``np.float32(0.1)`` is accepted, and a run
    writes every option it was given)."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, torch.device):
            return str(value)
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    return json.dumps(payload, indent=2, default=plain) + "\n"


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as JSON (:func:`json_text`), atomically (a reader never sees a partial file);
    :func:`read_json` reads it."""
    atomic_write_text(path, json_text(payload))


def save_state_dict(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a plain state_dict (tensors, numbers, strings) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_state_dict(path: str | os.PathLike[str], sha256: str | None = None) -> dict[str, Any]:
    """Load a plain state_dict with ``weights_only=True``; check the file's sha256 when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise ValueError(f"checkpoint {path} is corrupted: sha256 {actual} does not match the expected {sha256}")
    return torch.load(path, map_location="cpu", weights_only=True)


class TimeLimit:
    """The ``--time-limit`` of one call of a resumable training, in minutes from the call's start
    (``None``: none): an epoch starts only if the last one this call trained says it ends in time, and
    the first always runs. A run that must be done by a deadline (a session that ends, a device lent
    for minutes) stops on a whole epoch, its checkpoint written, instead of being killed inside one;
    the same command with ``--resume`` goes on. The estimate is this call's own (a checkpoint's epochs
    may be another machine's). Times are the caller's clock readings (``time.time()``), in seconds."""

    def __init__(self, minutes: float | None, started: float) -> None:
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < float("inf")):
            raise ValueError(f"time_limit must be a positive number of minutes, got {minutes!r}")
        self.minutes = minutes
        self.started = started
        self.last_epoch_seconds = 0.0

    def allows_epoch(self, now: float) -> bool:
        """Whether an epoch starting at ``now`` is expected to end within the limit."""
        return (self.minutes is None or not self.last_epoch_seconds
                or now + self.last_epoch_seconds <= self.started + 60 * self.minutes)

    def epoch_took(self, seconds: float) -> None:
        self.last_epoch_seconds = seconds


def resumes(checkpoint: str | os.PathLike[str], resume: bool, outputs: tuple[str, ...]) -> bool:
    """Whether a run goes on from ``checkpoint``, refusing the starts that would lose work: without
    ``resume``, a fresh start over an existing checkpoint; with or without it, a fresh start in a folder
    that holds an earlier run's ``outputs`` but no checkpoint (a finished run whose checkpoint was not
    kept, or a run moved to another machine without it), which it would overwrite. ``resume`` in a
    folder with neither starts the run, so that one command serves every segment of a long run."""
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        if not resume:
            raise ValueError(f"{checkpoint} exists: pass --resume to go on from it, or choose another --out")
        return True
    found = [name for name in outputs if (checkpoint.parent / name).exists()]
    if found:
        raise ValueError(f"{checkpoint.parent} holds an earlier run's {', '.join(found)} and no {checkpoint.name} to go on from: "
                         "starting afresh would overwrite them; restore the checkpoint and pass --resume, or choose another --out")
    return False


def refuse_orphan_curves(checkpoint: str | os.PathLike[str], epoch: float | None) -> None:
    """Refuse to start afresh in a folder whose TensorBoard curves (``tb/`` beside ``checkpoint``) reach
    ``epoch`` (``None``: none logged) while the checkpoint is gone: the one ``--resume`` command that
    serves every segment of a long run would otherwise start it over when the checkpoint was lost or
    never committed, and mix the two runs' curves."""
    if epoch is None:
        return
    checkpoint = Path(checkpoint)
    raise ValueError(f"{checkpoint.parent} holds TensorBoard curves of an earlier run up to epoch {epoch:g} and no "
                     f"{checkpoint.name} to go on from: starting afresh would mix two runs' curves; restore the "
                     f"checkpoint and pass --resume, or remove {checkpoint.parent / 'tb'} to start afresh")


def last_logged(tb_dir: str | os.PathLike[str], tag: str) -> tuple[int, float] | None:
    """The (step, value) ``tag`` was last logged with, in the TensorBoard folder ``tb_dir``; ``None`` for
    none. A run whose checkpoint is gone but whose end-of-epoch curves are there is an earlier run, not a
    fresh start (the same ``--resume`` command serves every segment of a long run, and would start it over)."""
    events = scalar_events(tb_dir, tag) if Path(tb_dir).is_dir() else []
    if not events:
        return None
    last = max(events, key=lambda e: e.step)
    return int(last.step), float(last.value)


def scalar_events(tb_dir: str | os.PathLike[str], tag: str) -> list[Any]:
    """Every event of scalar ``tag`` in the TensorBoard folder ``tb_dir`` (no reservoir sampling; each has
    ``step`` and ``value``), empty where the tag was never logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator.Scalars(tag) if tag in accumulator.Tags()["scalars"] else []


def stored_arguments(saved: str, args: Any, predates: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A checkpoint's arguments (a dataclass written as JSON) as the code that wrote it ran them, with
    the fields of ``args``' dataclass added since filled in: as their defaults, or for the fields in
    ``predates`` (whose default has changed since they were added) as the value they had then. ``None``
    when the checkpoint predates a required field (no default: not the same run)."""
    stored = json.loads(saved)
    defaults = {}
    for f in dataclasses.fields(args):
        if f.name in stored:
            continue
        if predates is not None and f.name in predates:
            defaults[f.name] = predates[f.name]
        elif f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
        else:
            return None
    return {**json.loads(json.dumps(defaults)), **stored}


def changed_arguments(saved: str, args: Any, predates: dict[str, Any] | None = None) -> list[str]:
    """How a checkpoint's arguments (a dataclass written as JSON) differ from ``args``, one
    ``"name: then X, now Y"`` per field, empty for the same run; fields added since it was written
    count as their defaults, so a run started before a new option existed still resumes
    (:func:`stored_arguments`, ``predates`` as there). A refused ``--resume`` names what changed
    instead of leaving thirty fields to compare by eye."""
    now = json.loads(json.dumps(dataclasses.asdict(args)))
    stored = stored_arguments(saved, args, predates)
    if stored is None:
        written = json.loads(saved)
        required = [f.name for f in dataclasses.fields(args)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        return [f"{name}: absent then (a required argument added since), now {now[name]!r}" for name in required if name not in written]
    return [f"{name}: then {stored.get(name)!r}, now {now.get(name)!r}" for name in sorted(stored.keys() | now.keys())
            if stored.get(name) != now.get(name)]


def refuse_other_run(checkpoint: str | os.PathLike[str], saved: str, args: Any, predates: dict[str, Any] | None = None) -> None:
    """``ValueError`` naming each changed argument (:func:`changed_arguments`) unless the checkpoint at
    ``checkpoint``, whose arguments are ``saved``, was written for ``args``: the one check before every
    ``--resume`` (``pretrain``, ``joint``, ``joint --from-scratch``)."""
    changed = changed_arguments(saved, args, predates)
    if changed:
        raise ValueError(f"{checkpoint} was written for another run ({'; '.join(changed)}): resume with those "
                         f"arguments, or start in another folder")
