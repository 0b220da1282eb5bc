"""A short-lived strongSwan daemon that judges a configuration before any lab runs.

`advise` is static, but whether strongSwan accepts a connection's values (a traffic selector,
a proposal keyword, a lifetime) is the daemon's call: the configuration is loaded over VICI
into a charon of its own, in a network namespace of its own that holds only a loopback, so it
can neither negotiate nor bind the host's IKE ports. Stopped by PID when the check is done.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.control import Vici
from lab.errors import LabError
from lab.files import write_private
from lab.processes import stop
from lab.render import environment
from lab.timing import patience

CHARON = "/usr/sbin/charon-systemd"
START_TIMEOUT = patience(10.0)


def available() -> str | None:
    """Why no scratch daemon can run here (None: it can)."""
    if os.geteuid() != 0:
        return "not root (a network namespace of its own needs root)"
    if not Path(CHARON).exists():
        return f"{CHARON} is not installed (make setup installs it)"
    return None


@contextmanager
def scratch_daemon() -> Iterator[Vici]:
    """A VICI session to a fresh charon in an empty network namespace."""
    with tempfile.TemporaryDirectory(prefix="ipsec-lab-scratch-") as directory:  # mode 0700
        run_dir = Path(directory)
        write_private(run_dir / "strongswan.conf", environment().get_template(
            "scratch-strongswan.conf.j2").render(run_dir=str(run_dir)))
        with (run_dir / "charon.stdout").open("w") as out:
            proc = subprocess.Popen(
                ["unshare", "--net", "--", CHARON],
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                     "STRONGSWAN_CONF": str(run_dir / "strongswan.conf")},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            socket = run_dir / "charon.vici"
            deadline = time.monotonic() + START_TIMEOUT
            while not socket.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = (run_dir / "charon.stdout").read_text()[-500:].strip()
                    raise LabError(f"the scratch strongSwan daemon did not start: {said}")
                time.sleep(0.02)
            with Vici(socket) as vici:
                yield vici
        finally:
            stop([proc.pid])
            proc.wait(timeout=patience(10.0))
