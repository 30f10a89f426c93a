"""Metrics from every worker process in one scrape: prometheus_client's multiprocess mode.

Web servers run several worker processes (gunicorn, `uvicorn --workers`); each has its own metric
values, and a scrape reaches one process. With `PROMETHEUS_MULTIPROC_DIR` set, each process writes
its values to files in that directory instead, and `setup_telemetry()` serves a registry that merges
the files of all processes (a `MultiProcessCollector`): counters and histograms summed over the
processes, in-flight gauges summed over the live ones (`livesum`). The endpoint binds its port with
SO_REUSEPORT, so every worker may call `setup_telemetry()`: whichever one a scrape reaches answers
for all of them.

Setting it up:

- Set `PROMETHEUS_MULTIPROC_DIR` to an empty directory in the server's environment, before Python
  starts: prometheus_client decides when it is imported whether values go to files, so setting the
  variable from Python code is too late (`setup_telemetry()` says so). Empty the directory at each
  server start (files of an earlier run would be summed in).
- When a worker exits, call `mark_process_dead(pid)` in the parent: with gunicorn, put
  `from hayscope.multiprocess import child_exit` in `gunicorn.conf.py` (gunicorn calls a module-level
  `child_exit(server, worker)` hook). Otherwise a worker that died mid-run keeps its runs "in flight".

Limits (prometheus_client's, and what they mean for hayscope's metrics):

- No exemplars: prometheus_client stores none in multiprocess mode, so histogram buckets carry no
  trace links. Spans are exported as usual.
- Collectors that read process state at scrape time are not in the files, so the endpoint leaves
  them out: `hayscope_executor_workers_busy`, `hayscope_executor_workers_max` and
  `hayscope_executor_queue_depth` (each process's own `registry` still has them), and
  prometheus_client's process, platform and GC collectors.
- A dead worker's counters and histograms stay in the sums, as a counter must never go down; its
  files stay in the directory until the next start (a server that restarts workers often
  accumulates files: one set per worker process ever started).
- Merging files at scrape time costs more than reading memory: scrape less often than every second.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Final

from prometheus_client import CollectorRegistry, values
from prometheus_client import multiprocess as prometheus_multiprocess

__all__ = ["MULTIPROC_DIR_VARIABLE", "child_exit", "mark_process_dead", "multiprocess_dir", "multiprocess_registry"]

MULTIPROC_DIR_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory multiprocess mode writes to, or None when `PROMETHEUS_MULTIPROC_DIR` is not set.

    :raises ValueError: when it is set but unusable (no such directory, not writable, or set after
        prometheus_client was imported), naming the value and the fix.
    """
    path = os.environ.get(MULTIPROC_DIR_VARIABLE, "").strip()
    if not path:
        return None
    where = f"{MULTIPROC_DIR_VARIABLE}={path!r}"
    if not os.path.isdir(path):
        raise ValueError(
            f"{where} is not a directory: create it, empty, before the server starts (e.g. `mkdir -p {path}`), "
            f"or unset {MULTIPROC_DIR_VARIABLE} for single-process metrics."
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{where} is not writable by this process: give it a directory it may write to.")
    if values.ValueClass is values.MutexValue:
        raise ValueError(
            f"{where} was set after prometheus_client was imported, so this process keeps its metrics in memory: "
            f"set it in the server's environment before Python starts (e.g. `{MULTIPROC_DIR_VARIABLE}={path} "
            "gunicorn app:app`), not from Python code."
        )
    global _fork_hook_registered
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_renew_value_lock)
        _fork_hook_registered = True
    return path


_fork_hook_registered = False
_LOCK_TYPE = type(threading.Lock())


def _renew_value_lock() -> None:
    """In a forked child: prometheus_client's multiprocess values share one lock, which it does not
    renew after a fork. Held by a parent's thread at that moment (a run recording its samples), it
    would stay held in the child, and the child's first sample would wait forever."""
    for cell in getattr(values.ValueClass.inc, "__closure__", None) or ():
        lock = cell.cell_contents
        if isinstance(lock, _LOCK_TYPE):
            lock._at_fork_reinit()  # type: ignore[attr-defined]


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry whose only collector merges the metric files of every process in `path`."""
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def mark_process_dead(pid: int) -> None:
    """Forget the live gauges of the dead process `pid` (its runs are no longer in flight).

    Its counters and histograms stay in the sums. Call it in the parent when a worker exits; it
    does nothing outside multiprocess mode.
    """
    path = os.environ.get(MULTIPROC_DIR_VARIABLE, "").strip()
    if path:
        prometheus_multiprocess.mark_process_dead(pid, path)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` hook: `from hayscope.multiprocess import child_exit` in `gunicorn.conf.py`."""
    mark_process_dead(worker.pid)
