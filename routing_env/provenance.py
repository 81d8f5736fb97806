"""Where a result came from: the machine, the thread count, the package versions and the git commit.

RL runs are deterministic on one machine and thread count, but not across CPUs or library versions
(a PPO run re-done on another VM moved by 0.3 points), so every ``train``, ``sweep``, ``study``,
``joint`` and ``pretrain`` output records this beside its figures.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("routing-env", "torch", "numpy", "numba", "gymnasium", "stable-baselines3", "sb3-contrib")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout this package runs from, ``+dirty`` if it has changes; ``None`` outside git."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES`; routing-env's own from the code that runs (an editable
    install's metadata keeps the version it was installed at)."""
    from . import __version__

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        if name == "routing-env":
            out[name] = __version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict[str, Any]:
    """The machine, threads, versions and commit, as written into run outputs."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
        "git_commit": git_commit(),
    }
