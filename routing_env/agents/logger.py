"""TensorBoard logging with CleanRL-style keys (docs/design.md §13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    """Writes ``charts/*``, ``losses/*`` and ``reward_terms/*`` scalars for one training run."""

    def __init__(self, directory: str | Path, purge_step: int | None = None) -> None:
        """``purge_step``: a resumed run's first step; what an earlier segment logged from there on (after
        its last checkpoint, before a kill) is dropped, so that no step is drawn twice."""
        self.directory = Path(directory)
        self.writer = SummaryWriter(str(directory), purge_step=purge_step)

    def episodes(self, step: int, returns: np.ndarray, correct: np.ndarray, macs_fraction: np.ndarray, exits: np.ndarray,
                 terms: dict[str, np.ndarray] | None = None) -> None:
        """Means over the episodes that ended since the last call; ``terms``, each reward term's episode
        totals (``info["reward_terms"]``), as ``reward_terms/<name>``: how much of the return each term makes."""
        if len(returns) == 0:
            return
        self.writer.add_scalar("charts/episodic_return", float(np.mean(returns)), step)
        for name, totals in (terms or {}).items():
            self.writer.add_scalar(f"reward_terms/{name}", float(np.mean(totals)), step)
        self.writer.add_scalar("charts/accuracy", float(np.mean(correct)), step)
        self.writer.add_scalar("charts/macs_fraction", float(np.mean(macs_fraction)), step)
        exits = np.asarray(exits).astype(np.int64)  # positions; a float array (an empty float chunk) would name tags "1.0"
        self.writer.add_histogram("charts/exit_histogram", exits, step)
        for position in np.unique(exits).tolist():  # each head's accuracy on the instances routed to it
            self.writer.add_scalar(f"charts/accuracy_at_exit_{position}", float(np.mean(np.asarray(correct)[exits == position])), step)

    def scalar(self, key: str, value: float, step: int) -> None:
        self.writer.add_scalar(key, float(value), step)

    def flush(self) -> None:
        """Everything logged so far on disk (before a checkpoint says it is done)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
