"""Processes the lab started, watched and stopped by PID (never by name: the machine is shared)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """True while `pid` is a live process: a zombie counts as gone (one of ours is reaped)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state field follows the parenthesised command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


STATES = {"R": "running", "S": "sleeping", "D": "in uninterruptible wait", "T": "stopped",
          "t": "stopped by a tracer", "Z": "a zombie", "X": "dead"}


def state(pid: int) -> str | None:
    """The process's scheduler state in words ("stopped" after SIGSTOP), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    code = stat.rpartition(")")[2].split()[0]
    return STATES.get(code, code)


def stop(pids: list[int], grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL what is left after `grace` seconds; returns how many were given."""
    running = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            running.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        running = [p for p in running if alive(p)]
        if running:
            time.sleep(0.05)
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
