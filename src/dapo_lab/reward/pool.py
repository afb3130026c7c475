"""A process pool where every call has a hard wall-clock bound: a worker past its deadline is killed.

``concurrent.futures`` cannot stop one running task, and a signal (SIGALRM) cannot interrupt sympy inside
one long C-level integer operation (``9**9**9``), nor does it work off the main thread. So each worker
here is its own process with its own pipe; the parent waits on all pipes with the earliest deadline as
timeout, kills a worker that overruns, and starts a replacement. A worker that dies (segfault, memory
limit) is replaced the same way and its task reported as ``"crash"``.

Workers start with the ``forkserver`` method where the platform has it (else ``spawn``), never ``fork``:
the trainer process holds torch and CUDA threads, which a forked child would inherit half-locked.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "crash"]


@dataclass(frozen=True)
class Outcome:
    """What one call gave: ``value`` when ``status == "ok"``, else a short ``error`` message."""

    status: Status
    value: Any = None
    error: str = ""


def resolve(path: str) -> Callable[..., Any]:
    """Import ``"pkg.module:attr"`` or ``"pkg.module.attr"``; raise ValueError naming the path if bad.

    >>> resolve("math:sqrt")(9.0), resolve("math.sqrt")(4.0)
    (3.0, 2.0)
    >>> resolve("math:no_such")
    Traceback (most recent call last):
    ...
    ValueError: cannot resolve 'math:no_such': module 'math' has no attribute 'no_such'
    """
    module_name, sep, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not attr:
        raise ValueError(f"cannot resolve {path!r}: expected 'pkg.module:function' or 'pkg.module.function'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot resolve {path!r}: {e}") from e
    if not callable(obj):
        raise ValueError(f"cannot resolve {path!r}: {type(obj).__name__} is not callable")
    return obj


def _worker_main(conn: Connection, fn_path: str, memory_limit_mb: int | None) -> None:
    if memory_limit_mb is not None:
        import resource

        limit = memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    fn = resolve(fn_path)
    conn.send("ready")
    while (task := conn.recv()) is not None:
        try:
            conn.send(("ok", fn(*task), ""))
        except BaseException as e:  # noqa: B036 - report everything, even MemoryError/RecursionError
            conn.send(("error", None, type(e).__name__))


class _Worker:
    def __init__(self, ctx: Any, fn_path: str, memory_limit_mb: int | None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn_path, memory_limit_mb), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.started = time.monotonic()
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5.0)
        self.conn.close()


def _shutdown(workers: list[_Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except OSError:
            pass
    for w in workers:
        w.proc.join(timeout=1.0)
        w.kill()
    workers.clear()


class TimeoutPool:
    """Run ``fn(*args)`` (``fn`` named by import path) in ``workers`` processes, each call at most
    ``timeout_s`` seconds of wall time. Processes start on first use and live until ``close()``.

    >>> with TimeoutPool("operator:add", workers=1, timeout_s=5.0) as pool:
    ...     [o.value for o in pool.map([(1, 2), (3, 4)])]
    [3, 7]
    """

    def __init__(
        self,
        fn: str,
        *,
        workers: int = 2,
        timeout_s: float = 2.0,
        memory_limit_mb: int | None = 2048,
        start_method: str | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"TimeoutPool needs workers >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.fn, self.workers, self.timeout_s = fn, workers, timeout_s
        self.memory_limit_mb, self.startup_timeout_s = memory_limit_mb, startup_timeout_s
        self.start_method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        self._procs: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._procs)

    # Pickling (e.g. a config object copied to another process) carries the settings, not the processes.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_procs", "_finalizer")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._procs = []
        self._finalizer = weakref.finalize(self, _shutdown, self._procs)

    def __enter__(self) -> TimeoutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop all worker processes (the pool restarts them if used again)."""
        _shutdown(self._procs)

    def _spawn(self) -> _Worker:
        return _Worker(mp.get_context(self.start_method), self.fn, self.memory_limit_mb)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._procs[self._procs.index(w)] = self._spawn()

    def map(self, tasks: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        """One Outcome per task, in order. Never raises for a task's fault; raises RuntimeError only
        when a worker cannot even start within ``startup_timeout_s``."""
        while len(self._procs) < self.workers:
            self._procs.append(self._spawn())
        results: list[Outcome | None] = [None] * len(tasks)
        todo = deque(range(len(tasks)))
        while todo or any(w.task is not None for w in self._procs):
            for w in self._procs:
                if w.ready and w.task is None and todo:
                    i = todo.popleft()
                    try:
                        w.conn.send(tasks[i])
                    except OSError:  # died while idle: not this task's fault, give it to another
                        todo.appendleft(i)
                        self._replace(w)
                        continue
                    w.task, w.deadline = i, time.monotonic() + self.timeout_s
            self._wait_once(results)
        return [r if r is not None else Outcome("crash", error="lost") for r in results]

    def _wait_once(self, results: list[Outcome | None]) -> None:
        now = time.monotonic()
        deadlines = [w.deadline for w in self._procs if w.task is not None]
        deadlines += [w.started + self.startup_timeout_s for w in self._procs if not w.ready]
        ready = wait([w.conn for w in self._procs], timeout=max(0.0, min(deadlines, default=now) - now))
        for w in list(self._procs):
            if w.conn in ready:
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):  # the process died: report its task, start another
                    w.proc.join(timeout=1.0)
                    if w.task is not None:
                        results[w.task] = Outcome("crash", error=f"worker exit code {w.proc.exitcode}")
                    elif not w.ready:
                        raise RuntimeError(f"reward worker for {self.fn!r} died while starting") from None
                    self._replace(w)
                    continue
                if msg == "ready":
                    w.ready = True
                else:
                    status, value, error = msg
                    results[w.task] = Outcome(status, value, error)
                    w.task = None
        now = time.monotonic()
        for w in list(self._procs):
            if w.task is not None and now >= w.deadline:
                results[w.task] = Outcome("timeout", error=f"no answer within {self.timeout_s} s")
                self._replace(w)
            elif not w.ready and now >= w.started + self.startup_timeout_s:
                raise RuntimeError(f"reward worker for {self.fn!r} did not start in {self.startup_timeout_s} s")
