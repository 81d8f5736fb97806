"""Where a study's trials run: here, one after another, or in a pool of worker processes.

:func:`run_trials` knows nothing of routing: a trial is any picklable value and ``fn`` any picklable
module-level function of it (a :func:`functools.partial` of one is fine), so that another engine (a Ray
one, say) can sit beside it with the same signature.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def run_trials(fn: Callable[[T], R], trials: Sequence[T], workers: int = 1, progress: bool = True) -> list[R]:
    """``[fn(t) for t in trials]``, in trial order, with a progress bar over trials (shown only on a
    terminal: ``disable=None``; never with ``progress=False``).

    ``workers=1`` runs them in this process, in order, at one torch thread. ``workers>1`` runs them in that many processes
    started with *spawn* (no forked copy of torch's thread pools or of this process's state), each
    limited to one torch thread so that K workers use K cores, not K × all of them, and a trial gives
    the figures it gives alone at one thread. A failed trial raises at once and the trials not yet
    started are cancelled (those running finish, so what they write is kept)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    with tqdm(total=len(trials), unit="trial", disable=None if progress else True) as bar:
        if workers == 1:  # at one torch thread too, so that a study's figures do not depend on --workers
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                results = []
                for trial in trials:
                    results.append(fn(trial))
                    bar.update()
            finally:
                torch.set_num_threads(threads)
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_torch_thread) as pool:
            futures = [pool.submit(fn, trial) for trial in trials]
            try:
                for future in as_completed(futures):
                    future.result()  # raises a failed trial's exception now, not after the others
                    bar.update()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
            return [future.result() for future in futures]


def _one_torch_thread() -> None:
    """A worker's initializer: one torch thread (see :func:`run_trials`)."""
    import torch

    torch.set_num_threads(1)
