"""The killable worker pool: hard time bounds, crashes, memory limits, order, clean shutdown.

The tasks are stdlib functions named by import path (what the pool runs in its workers), chosen for a
known behaviour: ``time.sleep`` (interruptible wait), ``operator.pow(9, 9**9)`` (one C-level operation
that no signal can stop), ``os._exit`` (a worker dying), ``builtins.bytearray`` (a memory hog).
"""

from __future__ import annotations

import os
import pickle
import time

import pytest

from dapo_lab.reward.pool import Outcome, TimeoutPool, resolve


def test_results_come_back_in_order():
    with TimeoutPool("operator:mul", workers=2, timeout_s=10.0) as pool:
        assert [o.value for o in pool.map([(i, i) for i in range(20)])] == [i * i for i in range(20)]
        assert pool.map([]) == []


def test_a_sleeping_task_is_killed_at_its_deadline_and_the_pool_goes_on():
    with TimeoutPool("time:sleep", workers=2, timeout_s=0.5) as pool:
        pool.map([(0,)])  # start the workers outside the timed part
        start = time.monotonic()
        outcomes = pool.map([(0.0,), (60.0,), (0.0,), (60.0,)])
        elapsed = time.monotonic() - start
        assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "timeout"]
        assert elapsed < 10.0  # two 60 s sleeps, bounded at 0.5 s each (slack for a loaded machine)
        assert pool.map([(0.0,)]) == [Outcome("ok", None)]  # replacements work


def test_an_uninterruptible_c_computation_is_killed():
    # 9 ** 387420489 is one C call that never returns to the interpreter (no signal handler would run)
    with TimeoutPool("operator:pow", workers=1, timeout_s=1.0) as pool:
        start = time.monotonic()
        outcomes = pool.map([(9, 9**9), (2, 10)])
        assert [o.status for o in outcomes] == ["timeout", "ok"]
        assert outcomes[1].value == 1024
        assert time.monotonic() - start < 15.0


def test_a_dying_worker_is_reported_and_replaced():
    with TimeoutPool("os:_exit", workers=1, timeout_s=5.0) as pool:
        outcomes = pool.map([(3,), (4,)])
        assert [o.status for o in outcomes] == ["crash", "crash"]
        assert "exit code 3" in outcomes[0].error and "exit code 4" in outcomes[1].error


def test_exceptions_come_back_as_errors():
    with TimeoutPool("operator:truediv", workers=1, timeout_s=5.0) as pool:
        outcomes = pool.map([(1, 0), (1, 4)])
        assert outcomes == [Outcome("error", None, "ZeroDivisionError"), Outcome("ok", 0.25)]


def test_memory_limit_turns_a_memory_hog_into_an_error():
    with TimeoutPool("builtins:bytearray", workers=1, timeout_s=10.0, memory_limit_mb=1024) as pool:
        outcomes = pool.map([(4 * 2**30,), (3,)])
        assert outcomes[0] == Outcome("error", None, "MemoryError")
        assert outcomes[1] == Outcome("ok", bytearray(3))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_close_stops_every_worker():
    pool = TimeoutPool("operator:add", workers=2, timeout_s=5.0)
    assert pool.pids == []
    assert [o.value for o in pool.map([(1, 1)])] == [2]
    pids = pool.pids
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    pool.close()
    assert pool.pids == [] and not any(_alive(pid) for pid in pids)
    assert [o.value for o in pool.map([(2, 2)])] == [4]  # a closed pool restarts on use
    pool.close()


def test_a_timed_out_worker_is_gone_not_orphaned():
    with TimeoutPool("time:sleep", workers=1, timeout_s=0.5) as pool:
        pool.map([(0,)])
        (pid,) = pool.pids
        assert pool.map([(60,)])[0].status == "timeout"
        assert not _alive(pid) and len(pool.pids) == 1 and pool.pids != [pid]


def test_workers_do_not_inherit_the_parents_main_module_or_torch():
    # spawn/forkserver would re-import the parent's __main__ (here pytest; in training train.py and torch)
    with TimeoutPool("sys:modules.__contains__", workers=1, timeout_s=10.0) as pool:
        outcomes = pool.map([("pytest",), ("torch",), ("dapo_lab.reward.pool",)])
    assert [o.value for o in outcomes] == [False, False, True]


def test_pickling_carries_settings_not_processes():
    with TimeoutPool("operator:add", workers=1, timeout_s=3.0) as pool:
        pool.map([(1, 1)])
        copy = pickle.loads(pickle.dumps(pool))
    with copy:
        assert (copy.fn, copy.workers, copy.timeout_s) == ("operator:add", 1, 3.0)
        assert copy.map([(2, 3)])[0].value == 5


def test_a_worker_that_cannot_start_raises_once():
    with TimeoutPool("operator:no_such_function", workers=1, timeout_s=1.0) as pool:
        with pytest.raises(RuntimeError, match="died while starting"):
            pool.map([(1,)])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        TimeoutPool("operator:add", workers=0)
    with pytest.raises(ValueError):
        TimeoutPool("operator:add", timeout_s=0.0)


@pytest.mark.parametrize(
    "path,message",
    [("no_such_module:f", "No module named"), ("math:nope", "has no attribute"), ("math:pi", "not callable"),
     ("justaname", "expected 'pkg.module:function'"), ("math:", "expected")],
)  # fmt: skip
def test_resolve_names_the_bad_path(path, message):
    with pytest.raises(ValueError, match=message) as info:
        resolve(path)
    assert repr(path) in str(info.value)


def test_resolve_accepts_colon_and_dot_forms_and_nested_attributes():
    assert resolve("os.path:join")("a", "b") == "a/b"
    assert resolve("os.path.join")("a", "b") == "a/b"
    assert resolve("collections:OrderedDict.fromkeys")("ab") == {"a": None, "b": None}
