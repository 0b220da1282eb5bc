"""Docker engine handling: find a running engine, or start our own dockerd safely.

The lab's machines often have only the docker client and no init system, so the lab
may have to install ``docker.io`` and start ``dockerd`` itself. A default dockerd
rewrites the host firewall (FORWARD policy DROP, MASQUERADE) and turns on ip_forward,
and those changes outlive it; the lab's gateways must see each other's traffic
unmodified, so we always start it with ``--iptables=false --ip-forward=false``.
We record the PID of the dockerd we start so that ``stop_engine`` can never stop an
engine somebody else runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors

from lab import processes
from lab.errors import LabError

#: Where our dockerd's PID is recorded (only a dockerd the lab started is ever listed here).
PID_FILE = Path("/run/ipsec-lab/dockerd.pid")
#: Our dockerd's stdout/stderr, kept so a failed start can be explained.
LOG_FILE = Path("/var/log/ipsec-lab-dockerd.log")
#: Options that keep dockerd away from the root namespace's firewall and forwarding.
DOCKERD_ARGS = ("--iptables=false", "--ip-forward=false")

PING_TIMEOUT = 2.0  # an engine that does not answer a ping in this long counts as absent
START_TIMEOUT = 60.0  # dockerd is normally ready in <1 s; a cold first start may need more
STOP_TIMEOUT = 30.0  # dockerd stops its containers (10 s grace each, in parallel) first
POLL_INTERVAL = 0.2

# Keeps the Popen of a dockerd started in this process alive, so Python neither warns
# about it nor reaps it behind our back; the daemon itself lives on after we exit.
_started: subprocess.Popen[bytes] | None = None


def engine_client(timeout: float = PING_TIMEOUT) -> docker.DockerClient | None:
    """Return a client for an engine that answers a ping within ``timeout``, else None.

    Honours DOCKER_HOST like the docker CLI does; any failure (no socket, refused,
    timeout, API error) just means "no usable engine".
    """
    try:
        client = docker.from_env(timeout=timeout)
    except docker.errors.DockerException:
        return None
    try:
        client.ping()
    except Exception:  # requests/urllib3/socket errors all mean "not there"
        client.close()
        return None
    return client


def ensure_engine(progress: Callable[[str], None] = lambda _msg: None) -> docker.DockerClient:
    """Return a client for a working engine, installing and starting dockerd if needed.

    Raises LabError when that is impossible (not root, apt fails, dockerd dies or does
    not answer in time); the message says where to look.
    """
    client = engine_client()
    if client is not None:
        progress("Docker engine is running")
        return client

    if os.environ.get("DOCKER_HOST"):
        raise LabError(
            f"the Docker engine at DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; "
            "start it, or unset DOCKER_HOST to let ipsec-lab start a local dockerd"
        )

    pid = recorded_pid()
    if pid is not None:
        # Our dockerd from an earlier run is alive but not answering yet: wait for it
        # rather than start a second one on the same socket.
        progress(f"waiting for the lab's dockerd (pid {pid}) to answer")
        return _wait_for_engine(pid, progress)

    if os.geteuid() != 0:
        raise LabError(
            "no Docker engine answers and starting one needs root: "
            "run as root, or start dockerd with --iptables=false --ip-forward=false"
        )

    dockerd = shutil.which("dockerd")
    if dockerd is None:
        apt_install(["docker.io"], progress)
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise LabError("docker.io was installed but no dockerd is on PATH")

    pid = _start_dockerd(dockerd, progress)
    return _wait_for_engine(pid, progress)


def stop_engine(progress: Callable[[str], None] = lambda _msg: None) -> bool:
    """Stop the dockerd that the lab started (found by its recorded PID), if it runs.

    Returns True when one was stopped. An engine the lab did not start is never touched.
    """
    pid = recorded_pid()
    if pid is None:
        PID_FILE.unlink(missing_ok=True)
        progress("no dockerd started by ipsec-lab is running")
        return False
    progress(f"stopping the lab's dockerd (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while processes.alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    if processes.alive(pid):
        progress(f"dockerd (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killing it")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while processes.alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
    PID_FILE.unlink(missing_ok=True)
    progress("dockerd stopped")
    return True


def recorded_pid() -> int | None:
    """PID of the dockerd the lab started, if the record exists and that process still
    is a dockerd (guards against a recycled PID)."""
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    if not processes.alive(pid):
        return None
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return None
    return pid if os.path.basename(argv0) == b"dockerd" else None


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Forbid maintainer scripts to start services while we install.

    On a host with systemd, installing docker.io would otherwise start docker.service
    with its default options, which rewrite the firewall. policy-rc.d (exit 101) is
    the Debian way to say "do not start anything"; we only add one if none exists.
    """
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# ipsec-lab: no service starts during install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def apt_install(packages: list[str], progress: Callable[[str], None]) -> None:
    """Install Debian packages non-interactively, refreshing the index once if needed.

    Services are kept from starting meanwhile (see _no_service_starts)."""
    if shutil.which("apt-get") is None:
        raise LabError(f"{' '.join(packages)} missing and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise LabError(f"{' '.join(packages)} missing; installing it needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    progress(f"installing {' '.join(packages)} with apt-get")
    started = time.monotonic()
    with _no_service_starts():
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            progress("apt-get install failed; refreshing the package index and retrying")
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, check=False)
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise LabError(f"apt-get install {' '.join(packages)} failed:\n{tail}")
    progress(f"installed {' '.join(packages)} in {time.monotonic() - started:.0f} s")


def _start_dockerd(dockerd: str, progress: Callable[[str], None]) -> int:
    """Start dockerd detached in its own session; record and return its PID."""
    global _started
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    progress(f"starting dockerd {' '.join(DOCKERD_ARGS)} (log: {LOG_FILE})")
    with LOG_FILE.open("ab") as log:
        log.write(f"\n--- ipsec-lab starting dockerd at {time.ctime()} ---\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [dockerd, *DOCKERD_ARGS],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _started = proc
    PID_FILE.write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_for_engine(pid: int, progress: Callable[[str], None]) -> docker.DockerClient:
    """Poll until the engine answers, dockerd ``pid`` dies, or START_TIMEOUT passes."""
    started = time.monotonic()
    deadline = started + START_TIMEOUT
    while time.monotonic() < deadline:
        client = engine_client(timeout=1.0)
        if client is not None:
            progress(f"dockerd (pid {pid}) answers after {time.monotonic() - started:.1f} s")
            return client
        if not processes.alive(pid):
            PID_FILE.unlink(missing_ok=True)
            raise LabError(f"dockerd exited at start; its log says:\n{_log_tail()}")
        time.sleep(POLL_INTERVAL)
    raise LabError(
        f"dockerd (pid {pid}) did not answer within {START_TIMEOUT:.0f} s; "
        f"it is still running, see {LOG_FILE}:\n{_log_tail()}"
    )


def _log_tail(lines: int = 15) -> str:
    """Last lines of our dockerd log, for error messages."""
    try:
        text = LOG_FILE.read_text(errors="replace")
    except OSError:
        return f"(no log at {LOG_FILE})"
    return "\n".join(text.strip().splitlines()[-lines:])
