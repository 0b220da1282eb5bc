"""Driving one pluto through its control socket with libreswan's own tools (addconn, whack).

Both run on the host against the gateway's socket (`--ctlsocket`), as `lab.control` talks VICI
to charon; every call is bounded in time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.control import InitiateFailed
from lab.errors import LabError
from lab.libreswan.install import tool
from lab.libreswan.pluto import CTL
from lab.timing import patience


class Whack:
    """pluto of one gateway, whose files are in `directory` (as lab.libreswan.pluto starts it)."""

    def __init__(self, directory: Path, timeout: float = patience(30.0)):
        self.directory = directory
        self.ctl = directory / CTL
        self.timeout = timeout

    def _whack(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([tool("whack"), "--ctlsocket", str(self.ctl), *args],
                                  capture_output=True, text=True, check=False,
                                  timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"pluto at {self.ctl} did not answer `whack {' '.join(args)}` in "
                           f"{timeout or self.timeout:.0f} s") from None

    def load(self) -> None:
        """Every conn of the gateway's ipsec.conf with auto=add (addconn --autoall), and the
        secrets read anew."""
        done = subprocess.run([tool("addconn"), "--config", str(self.directory / "ipsec.conf"),
                               "--ctlsocket", str(self.ctl), "--autoall"],
                              capture_output=True, text=True, check=False, timeout=self.timeout)
        if done.returncode != 0:
            raise LabError(f"libreswan refused {self.directory / 'ipsec.conf'}: "
                           f"{(done.stderr or done.stdout).strip()}")
        done = self._whack("--rereadsecrets")
        if done.returncode != 0:
            raise LabError(f"pluto did not read its secrets: {(done.stderr or done.stdout).strip()}")

    def initiate(self, name: str, timeout: float = patience(15.0)) -> list[str]:
        """Negotiate conn `name` and wait for the outcome; returns whack's lines (pluto's log
        of the attempt), raises InitiateFailed with them."""
        done = self._whack("--name", name, "--initiate", timeout=timeout)
        lines = (done.stdout + done.stderr).splitlines()
        if done.returncode != 0:
            raise InitiateFailed(f"libreswan could not establish {name!r} (whack exit "
                                 f"{done.returncode})", lines)
        return lines

    def rekey_child(self, name: str) -> None:
        done = self._whack("--name", name, "--rekey-ipsec")
        if done.returncode != 0:
            raise LabError(f"rekeying {name!r} failed: {(done.stderr or done.stdout).strip()}")

    def delete(self, name: str) -> None:
        """Unload conn `name` and delete its states (whack --delete); a conn pluto does not
        have is no error (the caller proves what is left)."""
        self._whack("--delete", "--name", name)

    def text(self, what: str) -> str:
        """One of whack's status reports (`--status`, `--showstates`, `--trafficstatus`)."""
        done = self._whack(what)
        if done.returncode != 0:
            raise LabError(f"pluto at {self.ctl} did not answer {what}: "
                           f"{(done.stderr or done.stdout).strip()}")
        return done.stdout
