"""The test helpers that pytest-xdist relies on: a real run built once per session, retried clean after a failure."""

from __future__ import annotations

import pytest
from helpers import built_once


def test_built_once_builds_once_and_a_failed_attempt_leaves_nothing_behind(tmp_path_factory):
    calls = []

    def make(folder):
        calls.append(folder)
        (folder / "run.txt").write_text("done")
        return {"calls": len(calls)}

    assert built_once(tmp_path_factory, "helpers-once", make) == {"calls": 1}
    assert built_once(tmp_path_factory, "helpers-once", make) == {"calls": 1}  # unpickled, not built again
    assert len(calls) == 1 and (calls[0] / "run.txt").read_text() == "done"

    def failing(folder):
        (folder / "partial.txt").write_text("")
        raise RuntimeError("the run crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        built_once(tmp_path_factory, "helpers-retry", failing)
    # the next attempt starts in an empty folder and its result is kept
    assert built_once(tmp_path_factory, "helpers-retry", lambda folder: sorted(folder.iterdir())) == []
    assert built_once(tmp_path_factory, "helpers-retry", failing) == []
