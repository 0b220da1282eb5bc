"""Probe agents started by forking a process that already imported scapy.

A check starts five or more agents (capture, listeners, senders), a scenario more; each used to
be a new Python that imported scapy (~0.7 s of CPU here, ~15 s in the TCG guest of the VM
harness). On the netns backend they now fork from one server per orchestrator process that
imported `lab.agent` and scapy once: the child enters the node's network namespace, takes the
pipes the orchestrator passed it (SCM_RIGHTS), refreshes scapy's view of interfaces and routes
(read at import, in the root namespace) and runs the agent's mode. The orchestrator gets a
Popen-like handle. The server ends when the orchestrator's end of its socket closes.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any

from lab import netlink

_lock = threading.Lock()
_server: tuple[subprocess.Popen[bytes], socket.socket] | None = None


# -- the orchestrator's side ----------------------------------------------------------------------
class ForkedAgent:
    """What lab.probe.Agent uses of subprocess.Popen, for a child of the fork server.

    The child is not ours (the server forks it), so its exit is seen through a pidfd and its
    exit status is not known: `returncode` is 0 once it ended (agents report in their output)."""

    def __init__(self, pid: int, stdin: IO[str], stdout: IO[str], stderr: IO[str]):
        self.pid = pid
        self.stdin: IO[str] | None = stdin
        self.stdout: IO[str] | None = stdout
        self.stderr: IO[str] | None = stderr
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd, self.returncode = None, 0

    def poll(self) -> int | None:
        if self.returncode is None and self._pidfd is not None:
            ready, _, _ = select.select([self._pidfd], [], [], 0)
            if ready:
                self._ended()
        return self.returncode

    def _ended(self) -> None:
        self.returncode = 0
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._pidfd is not None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("probe agent", timeout or 0)
            self._ended()
        return self.returncode or 0

    def kill(self) -> None:
        if self.poll() is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def communicate(self, input: str | None = None,  # noqa: A002 - Popen's own name
                    timeout: float | None = None) -> tuple[str, str]:
        """Popen.communicate: feed and close stdin, read both outputs to their end, wait."""
        if self.stdout is None or self.stderr is None:
            raise ValueError("I/O operation on closed file")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                if input:
                    self.stdin.write(input)
                self.stdin.close()
            self.stdin = None
        chunks: dict[int, list[bytes]] = {self.stdout.fileno(): [], self.stderr.fileno(): []}
        open_fds = list(chunks)
        while open_fds:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(open_fds, [], [], left)
            if not ready:
                raise subprocess.TimeoutExpired("probe agent", timeout or 0)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.remove(fd)
        out = b"".join(chunks[self.stdout.fileno()]).decode(errors="replace")
        err = b"".join(chunks[self.stderr.fileno()]).decode(errors="replace")
        self.stdout.close()
        self.stderr.close()
        self.stdout = self.stderr = None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(left)
        return out, err


def spawn(netns_path: str, args: list[str]) -> ForkedAgent:
    """Start `lab/agent.py ARGS` inside the network namespace at `netns_path`."""
    _, sock = _ensure_server()
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    try:
        with _lock:
            sock.sendmsg([json.dumps({"netns": netns_path, "args": args}).encode()],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r_in, w_out, w_err]))])
            reply = sock.recv(4096)
    finally:
        for fd in (r_in, w_out, w_err):
            os.close(fd)
    answer = json.loads(reply or b"{}")
    if "pid" not in answer:
        for fd in (w_in, r_out, r_err):
            os.close(fd)
        raise OSError(f"the agent fork server did not start the agent: {answer.get('error', 'no reply')}")
    return ForkedAgent(answer["pid"], os.fdopen(w_in, "w"), os.fdopen(r_out, "r"),
                       os.fdopen(r_err, "r"))


def _ensure_server() -> tuple[subprocess.Popen[bytes], socket.socket]:
    global _server
    with _lock:
        if _server is not None and _server[0].poll() is None:
            return _server
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc = subprocess.Popen([sys.executable, "-m", "lab.forkserver", str(theirs.fileno())],
                                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                start_new_session=True)
        theirs.close()
        ready = mine.recv(64)
        if ready != b"ready":
            proc.kill()
            raise OSError("the agent fork server did not start")
        _server = (proc, mine)
        return _server


# -- the server ---------------------------------------------------------------------------------------
def serve(fd: int) -> None:
    from lab import agent

    agent._scapy()  # the import every agent would otherwise repeat
    from scapy.layers import l2  # noqa: F401 - hostile and serve modes use layer 2
    from scapy.sendrecv import sendp  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    sock = socket.socket(fileno=fd)
    sock.send(b"ready")
    while True:
        try:
            msg, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
        except OSError:
            return
        if not msg:
            return  # the orchestrator went away
        fds = array.array("i")
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        request = json.loads(msg)
        try:
            pid = os.fork()
        except OSError as exc:
            sock.send(json.dumps({"error": str(exc)}).encode())
            for f in fds:
                os.close(f)
            continue
        if pid == 0:
            sock.close()
            _child(request, list(fds))
        for f in fds:
            os.close(f)
        sock.send(json.dumps({"pid": pid}).encode())


def _child(request: dict[str, Any], fds: list[int]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        netlink.enter(request["netns"])
        from scapy.config import conf
        from scapy.interfaces import get_working_if

        conf.ifaces.reload()  # read at import, in the root namespace: now this node's
        conf.route.resync()
        if conf.route6 is not None:
            conf.route6.resync()
        working = get_working_if()
        if working is not None:
            conf.iface = working
        from lab import agent

        sys.argv = ["agent.py", *request["args"]]
        agent.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported on the agent's stderr like any agent's crash
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
