"""The probe agent (lab/agent.py) running in a node, seen from the orchestrator: started through
the backend, a `ready` line once it listens, then one JSON result line."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
from typing import TYPE_CHECKING, Any

from lab.errors import LabError
from lab.timing import patience

if TYPE_CHECKING:
    from lab.running import Lab

AGENT_START_TIMEOUT = patience(30.0)


class Agent:
    """lab/agent.py running in a node: a `ready` line once listening, then one result line."""

    def __init__(self, lab: Lab, node: str, args: list[str], stdin: str | None = None,
                 keep_open: bool = False):
        self.node, self.mode = node, args[0]
        self.proc = lab.backend.spawn_agent(lab.state, node, args)
        if stdin is not None and keep_open:
            self.say(stdin)
        elif stdin is not None:
            self.feed(stdin)

    def say(self, line: str) -> None:
        """One line to the agent, stdin kept open."""
        assert self.proc.stdin
        self.proc.stdin.write(line.rstrip("\n") + "\n")
        self.proc.stdin.flush()

    def feed(self, text: str) -> None:
        """Hand the agent its input and close stdin (which also stops a capture)."""
        if self.proc.stdin:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(text)
                self.proc.stdin.close()
            self.proc.stdin = None  # communicate() would flush a closed pipe

    def wait_ready(self, timeout: float = AGENT_START_TIMEOUT) -> None:
        self.expect("ready", timeout, failure="did not start")

    def expect(self, key: str, timeout: float = AGENT_START_TIMEOUT,
               failure: str | None = None) -> dict[str, Any]:
        """The next JSON line, which must carry `key` (`ready`, or a step of a multi-step
        agent); else the agent is killed and `failure` (default: it did not answer) raised."""
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        try:
            got = json.loads(line)
        except ValueError:
            got = {}
        if not isinstance(got, dict) or key not in got:
            self.kill()
            raise LabError(f"probe agent ({self.mode}) in {self.node} "
                           f"{failure or f'did not answer {key!r}'}: "
                           f"{self._stderr() or line.strip()[-200:]}")
        return got

    def _stderr(self) -> str:
        try:
            _, err = self.proc.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            err = ""
        return (err or "").strip()[-500:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                self.proc.communicate(timeout=5)

    def finish(self, timeout: float = patience(60.0)) -> dict[str, Any]:
        """Close stdin (stops a capture) and read the result line."""
        self.feed("")
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        except ValueError:  # already ended and read (killed after a failed start)
            out, err = "", "it had already been stopped"
        lines = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
        results = [json.loads(ln) for ln in lines if '"ready"' not in ln]
        if not results:
            code = self.proc.returncode
            how = f"it was killed (signal {-code})" if code is not None and code < 0 else \
                (err or "").strip()[-500:] or "it ended without reporting (killed?)"
            raise LabError(f"probe agent ({self.mode}) in {self.node} gave no result: {how}")
        return results[-1]
