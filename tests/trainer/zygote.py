"""Runs of one script, each a fresh process forked from an interpreter that imported the script's modules once.

A test module that runs the same script many times (test_reliability.py: 15 runs of kill_check.py) pays Python's
start-up once instead of per run: ~12 s of CPU per interpreter on a 2-core machine for torch, transformers and
Lightning. Each run is still a process of its own, in its own session (a run past its bound is SIGKILLed with its
whole group, as ``helpers.run_bounded`` does; kill_check.py SIGKILLs itself), with its own output, forked from a
server that ran nothing but the script's imports: it starts in the state a fresh interpreter has after them. What a
fork shares that fresh interpreters do not is the string-hash seed, so a test of run-to-run determinism keeps one
side on ``run_bounded``.

    python zygote.py SCRIPT    # the server: imports SCRIPT's modules, then runs one request per stdin line
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest


class Zygote:
    """The client: ``Zygote(script, env)`` starts the server with ``env`` (every run inherits it); ``run(args, cwd,
    timeout)`` runs ``python SCRIPT args`` in a fork and returns its output, failing the test as run_bounded does."""

    def __init__(self, script: Path, env: dict[str, str]) -> None:
        self.script = script
        self.server = subprocess.Popen([sys.executable, __file__, str(script)], env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, start_new_session=True)

    def run(self, args: list[str], cwd: Path, timeout: int = 240, expect_kill: bool = False) -> str:
        self.server.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "timeout": timeout}) + "\n")
        self.server.stdin.flush()
        line = self.server.stdout.readline()  # the server answers when the run has ended or was killed at its bound
        if not line:
            pytest.fail(f"the fork server for {self.script.name} exited (code {self.server.wait()})")
        reply = json.loads(line)
        log = Path(reply["log"])
        output = log.read_text(errors="replace")
        log.unlink()
        if reply["timed_out"]:
            pytest.fail(f"{[self.script.name, *args]} hung for {timeout} s and was killed:\n{output[-3000:]}")
        assert reply["returncode"] == (-signal.SIGKILL if expect_kill else 0), output[-3000:]
        return output

    def close(self) -> None:
        self.server.stdin.close()  # the server leaves at the end of its input
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()


def _child(script: Path, request: dict, log: str) -> None:
    """In the fork: a session of its own, output to ``log``, then the script as ``__main__``; never returns."""
    code = 1
    try:
        os.setsid()
        out = os.open(log, os.O_WRONLY | os.O_TRUNC)
        os.dup2(out, 1), os.dup2(out, 2), os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(request["cwd"])
        sys.argv = [str(script), *request["args"]]
        runpy.run_path(str(script), run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - reported in the log, like an interpreter's uncaught exception
        traceback.print_exc()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


def serve(script: Path) -> None:
    sys.path[0] = str(script.parent)  # as `python SCRIPT` has it
    runpy.run_path(str(script), run_name="__zygote__")  # the imports; its `__main__` block does not run
    for line in sys.stdin:
        request = json.loads(line)
        fd, log = tempfile.mkstemp(prefix="zygote-", suffix=".log")
        os.close(fd)
        pid = os.fork()
        if pid == 0:
            _child(script, request, log)
        deadline, timed_out = time.monotonic() + request["timeout"], False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:  # the whole session: a hung gloo collective ignores SIGTERM
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended just now
                    pass
                _, status = os.waitpid(pid, 0)
                timed_out = True
                break
            time.sleep(0.05)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out, "log": log}),
              flush=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]).resolve())
