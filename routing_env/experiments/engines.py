"""Where a sweep's or a study's trials run: here, in a pool of worker processes, or on Ray.

:func:`run_trials` knows nothing of routing: a trial is any picklable value and ``fn`` any picklable
module-level function of it (a :func:`functools.partial` of one is fine). ``engine="local"`` runs
them in this process (``workers=1``) or a process pool; ``engine="ray"`` runs each as a Ray task with
one CPU, on a local Ray started here or on the cluster at ``address`` (``pip install
routing-env[ray]``). Nothing else in the package knows about Ray. Every engine runs a trial at one
torch thread, so the same trial gives the same figures wherever it runs.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


ENGINES = ("local", "ray")


def check_engine(workers: int, engine: str, address: str | None) -> None:
    """Refuse bad engine settings (before a sweep or study writes anything)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    if address is not None and engine != "ray":
        raise ValueError(f"--address joins a Ray cluster: it needs --engine ray, got engine {engine!r}")


def run_trials(
    fn: Callable[[T], R], trials: Sequence[T], workers: int = 1, progress: bool = True, engine: str = "local",
    address: str | None = None,
) -> list[R]:
    """``[fn(t) for t in trials]``, in trial order, with a progress bar over trials (shown only on a
    terminal: ``disable=None``; never with ``progress=False``).

    ``workers=1`` runs them in this process, in order, at one torch thread. ``workers>1`` runs them in that many processes
    started with *spawn* (no forked copy of torch's thread pools or of this process's state), each
    limited to one torch thread so that K workers use K cores, not K × all of them, and a trial gives
    the figures it gives alone at one thread. A failed trial raises at once and the trials not yet
    started are cancelled (those running finish, so what they write is kept). The pool's workers
    end with this process, even when it is killed by a signal."""
    check_engine(workers, engine, address)
    if engine == "ray":
        return _run_on_ray(fn, trials, workers, progress, address)
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
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            futures = [pool.submit(fn, trial) for trial in trials]
            try:
                for future in as_completed(futures):
                    future.result()  # raises a failed trial's exception now, not after the others
                    bar.update()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
            return [future.result() for future in futures]


def _init_worker() -> None:
    """A worker's initializer: one torch thread (see :func:`run_trials`), and exit when the parent
    does. A parent killed by a signal runs no clean-up, and its workers would otherwise finish their
    trials as orphans, holding the cores a resumed sweep needs; a trial writes atomically, so one cut
    short is simply run again on resume."""
    import torch

    torch.set_num_threads(1)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True, name="exit-with-parent").start()


def _exit_with(sentinel: int) -> None:
    """Block until ``sentinel`` (the parent process's) is ready, that is until the parent has died,
    then end this process at once."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _one_thread_call(fn: Callable[[T], R], trial: T) -> R:
    import torch

    torch.set_num_threads(1)
    return fn(trial)


def _run_on_ray(fn: Callable[[T], R], trials: Sequence[T], workers: int, progress: bool, address: str | None) -> list[R]:
    """Each trial a Ray task with one CPU: on a local Ray of ``workers`` CPUs started (and stopped)
    here, or on the running cluster at ``address``; results in trial order, a failure raised at once."""
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'routing-env[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        task = ray.remote(num_cpus=1)(_one_thread_call)
        refs = [task.remote(fn, trial) for trial in trials]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[R | None] = [None] * len(refs)
        with tqdm(total=len(refs), unit="trial", disable=None if progress else True) as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results[index[done[0]]] = ray.get(done[0])  # raises a failed trial's error now
                bar.update()
        return results  # type: ignore[return-value]
    finally:
        if started:
            ray.shutdown()
