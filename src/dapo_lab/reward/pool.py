"""A process pool where every call has a hard wall-clock bound: a worker past its deadline is killed.

``concurrent.futures`` cannot stop one running task, and a signal (SIGALRM) cannot interrupt sympy inside
one long C-level integer operation (``9**9**9``), nor does it work off the main thread. So each worker
here is its own process with its own pipe; the parent waits on all pipes with the earliest deadline as
timeout, kills a worker that overruns, and starts a replacement. A worker that dies (segfault, memory
limit) is replaced the same way and its task reported as ``"crash"``.

Workers are fresh interpreters (``subprocess`` + exec, POSIX), never ``fork``: the trainer process holds
torch and CUDA threads, which a forked child would inherit half-locked. Simplified from a
multiprocessing ``spawn``/``forkserver`` context on purpose: those re-import the parent's ``__main__``
in every worker (for ``train.py``: torch, lightning, CUDA libraries; seconds and hundreds of MB per
worker and per replacement). A worker here imports only the function it runs; it gets the parent's
``sys.path``, so it finds what the parent finds.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import Pipe
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


def _virtual_memory_bytes() -> int:
    with open("/proc/self/statm") as f:  # Linux; elsewhere the limit is absolute
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _worker_main(fd: int) -> None:
    """Worker process: receive the function's path, import it, then answer tasks until told to stop."""
    conn = Connection(fd)
    fn_path, memory_limit_mb = conn.recv()
    fn = resolve(fn_path)  # imports everything the function needs before the first deadline starts
    if memory_limit_mb is not None:
        import resource

        try:
            base = _virtual_memory_bytes()
        except OSError:
            base = 0
        limit = base + memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send("ready")
    while (task := conn.recv()) is not None:
        try:
            conn.send(("ok", fn(*task), ""))
        except BaseException as e:  # noqa: B036 - report everything, even MemoryError/RecursionError
            conn.send(("error", None, type(e).__name__))


_BOOT = (  # argv: the pipe's file descriptor, the parent's sys.path
    "import sys, json; sys.path[:0] = json.loads(sys.argv[2]); "
    "from dapo_lab.reward.pool import _worker_main; _worker_main(int(sys.argv[1]))"
)


class _Worker:
    def __init__(self, fn_path: str, memory_limit_mb: int | None) -> None:
        self.conn, child = Pipe(duplex=True)
        fd = child.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(fd), json.dumps(sys.path)], pass_fds=(fd,), stdin=subprocess.DEVNULL
        )
        child.close()
        self.conn.send((fn_path, memory_limit_mb))
        self.ready = False
        self.started = time.monotonic()
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5.0)
        self.conn.close()


def _shutdown(workers: list[_Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except OSError:
            pass
    for w in workers:
        try:
            w.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
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
        startup_timeout_s: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"TimeoutPool needs workers >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.fn, self.workers, self.timeout_s = fn, workers, timeout_s
        self.memory_limit_mb, self.startup_timeout_s = memory_limit_mb, startup_timeout_s
        self._procs: list[_Worker] = []
        self._lock = threading.Lock()  # one map() at a time: workers and their pipes are not shared
        self._finalizer = weakref.finalize(self, _shutdown, self._procs)

    # Pickling (e.g. a config object copied to another process) carries the settings, not the processes.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_procs", "_lock", "_finalizer")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._procs = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._procs)

    def __enter__(self) -> TimeoutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop all worker processes (the pool restarts them if used again)."""
        with self._lock:
            _shutdown(self._procs)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (empty before first use and after ``close()``)."""
        return [w.proc.pid for w in self._procs if w.proc.poll() is None]

    def _spawn(self) -> _Worker:
        return _Worker(self.fn, self.memory_limit_mb)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._procs[self._procs.index(w)] = self._spawn()

    def map(self, tasks: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        """One Outcome per task, in order. Never raises for a task's fault; raises RuntimeError only
        when a worker cannot even start within ``startup_timeout_s``. Thread-safe (calls queue up)."""
        with self._lock:
            return self._map(tasks)

    def _map(self, tasks: Sequence[tuple[Any, ...]]) -> list[Outcome]:
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
                    try:
                        w.proc.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        pass
                    if w.task is not None:
                        results[w.task] = Outcome("crash", error=f"worker exit code {w.proc.returncode}")
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
