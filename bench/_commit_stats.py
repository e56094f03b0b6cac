"""Run the server with its group-commit counters readable from outside (bench only).

    python bench/_commit_stats.py -m teamgram.cli serve ...   # as ``python -m``
    python bench/_commit_stats.py -c "import teamgram.cli"    # as ``python -c``

A launcher, not a change to the server: it runs the module (or code) it is given
exactly as ``python`` would, after noting every :class:`GroupCommit` writer the
server creates. On SIGUSR1 it appends ``<batches> <operations>`` (summed over the
writers: the counters ``GroupCommit`` keeps for benchmarks) to the file named by
``BENCH_COMMIT_STATS_FILE`` (not a ``TEAMGRAM_*`` name: those are server settings).
A bench signals before and after a phase and takes the difference. Used as
``ServerProcess(python_flags=[this file])``.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from types import FrameType
from typing import Any

from teamgram.infra.group_commit import GroupCommit

STATS_ENV = "BENCH_COMMIT_STATS_FILE"

_writers: list[GroupCommit] = []
_original_init = GroupCommit.__init__


def _tracking_init(self: GroupCommit, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    _writers.append(self)


def _report(signum: int, frame: FrameType | None) -> None:
    path = os.environ.get(STATS_ENV)
    if not path:
        return
    batches = sum(w.batches for w in _writers)
    operations = sum(w.operations for w in _writers)
    with open(path, "a") as f:
        f.write(f"{batches} {operations}\n")


def main() -> None:
    GroupCommit.__init__ = _tracking_init  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _report)
    if len(sys.argv) >= 3 and sys.argv[1] == "-m":
        module = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif len(sys.argv) >= 3 and sys.argv[1] == "-c":
        code = sys.argv[2]
        sys.argv = ["-c", *sys.argv[3:]]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit(f"usage: {sys.argv[0]} -m MODULE [ARGS...] | -c CODE [ARGS...]")


if __name__ == "__main__":
    main()
