"""zygote.Zygote, the fork server behind test_reliability.py's runs: every run is a fresh process in its own session
that starts from the server's imports and nothing else, and a failure, a kill or a hang reads as run_bounded's do."""

from __future__ import annotations

import json
import os

import pytest
from zygote import Zygote

SCRIPT = '''
import json, os, signal, sys, time
import state  # imported once by the server; a run that changes it must not change the next run's copy

if __name__ == "__main__":
    state.calls.append(sys.argv[1:])
    mode = sys.argv[1]
    print(json.dumps({"pid": os.getpid(), "sid": os.getsid(0), "calls": state.calls, "cwd": os.getcwd(),
                      "loaded_at": state.LOADED_AT, "env": os.environ.get("ZYGOTE_TEST")}))
    if mode == "fail":
        raise RuntimeError("a bug in the run")
    if mode == "exit":
        sys.exit(3)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        time.sleep(600)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zygote")
    (folder / "state.py").write_text("import time\ncalls = []\nLOADED_AT = time.time()\n")
    (folder / "script.py").write_text(SCRIPT)
    running = Zygote(folder / "script.py", {**os.environ, "ZYGOTE_TEST": "from the server's env"})
    yield running
    running.close()
    assert running.server.returncode == 0


def test_each_run_is_a_fresh_process_of_its_own_from_the_servers_imports(server, tmp_path):
    first, second = (json.loads(server.run([mode], tmp_path).splitlines()[0]) for mode in ("ok", "ok2"))
    assert first["pid"] != second["pid"] and first["pid"] != server.server.pid
    assert first["sid"] == first["pid"] and second["sid"] == second["pid"]  # each leads a session of its own
    assert first["calls"] == [["ok"]] and second["calls"] == [["ok2"]]  # the first run's change died with it
    assert first["loaded_at"] == second["loaded_at"]  # the module was imported once, by the server
    assert first["cwd"] == str(tmp_path) and first["env"] == "from the server's env"


def test_a_failing_run_fails_the_test_with_its_traceback(server, tmp_path):
    with pytest.raises(AssertionError, match="a bug in the run"):
        server.run(["fail"], tmp_path)
    with pytest.raises(AssertionError):
        server.run(["exit"], tmp_path)  # a nonzero exit status


def test_a_run_that_kills_itself_is_expected_or_fails(server, tmp_path):
    server.run(["kill"], tmp_path, expect_kill=True)
    with pytest.raises(AssertionError):
        server.run(["kill"], tmp_path)
    with pytest.raises(AssertionError):
        server.run(["ok"], tmp_path, expect_kill=True)  # a run expected to be killed that finished


def test_a_hanging_run_is_killed_at_its_bound_and_fails_the_test(server, tmp_path):
    with pytest.raises(pytest.fail.Exception, match="hung for 1 s"):
        server.run(["hang"], tmp_path, timeout=1)
    server.run(["ok"], tmp_path)  # the server serves the next run

