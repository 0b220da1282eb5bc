"""A matrix lab's libreswan customer gateway: pluto driven with its own tools, case after case.

The matrix runs strongSwan's side over VICI (`LabRig`); pluto has no VICI, so each case's
customer config is written where the running pluto reads it and loaded with addconn, its state
read from `whack --status` and the kernel's XFRM states, and the case's own log lines cut out of
pluto's log file by their position (pluto writes each line as it logs it, so what the file holds
past the case's start offset once the case ended is the case's). Clean-up deletes each conn,
which takes its states with it, and proves pluto holds no conn, no state and the kernel no SA.
"""

from __future__ import annotations

import re
import time
from typing import Any

from lab.errors import LabError
from lab.files import write_private
from lab.libreswan import pluto, status
from lab.libreswan.whack import Whack
from lab.plan import Gateway, LabPlan
from lab.render import render_gateway
from lab.running import Lab
from lab.timing import patience

CLEAN_TIMEOUT = patience(5.0)
# pluto's log line prefix with --logfile: "Dec  4 01:12:06.810455: "
_STAMP = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?: ")


class PlutoGone(LabError):
    """pluto stopped answering or keeps state it was told to drop: restart the lab."""


class PlutoPeer:
    """The running pluto of one matrix lab's customer gateway `node`."""

    def __init__(self, lab: Lab, node: str):
        self.lab, self.node = lab, node
        self.directory = lab.backend.host_dir(lab.state.name, node)
        self.whack = Whack(self.directory, timeout=patience(10.0))
        self.log_path = self.directory / pluto.LOG
        self._offset = 0
        self._mappings: dict[str, str] = {}
        self._conns: list[str] = []

    # -- one case ---------------------------------------------------------------------------------
    def start_case(self) -> None:
        """Mark where the case's log lines begin."""
        try:
            self._offset = self.log_path.stat().st_size
        except OSError:
            self._offset = 0

    def load(self, plan: LabPlan, gw: Gateway) -> None:
        """The case's ipsec.conf and ipsec.secrets where pluto reads them, then addconn."""
        files = render_gateway(plan, gw, self.lab.backend.run_dir(self.lab.state.name, gw.node))
        for name in ("ipsec.conf", "ipsec.secrets"):
            write_private(self.directory / name, files[name])
        self._mappings = {ch.name: c.name for c in gw.connections for ch in c.children}
        self._conns = list(self._mappings)
        self.whack.load()

    def initiate(self, child: str, timeout: float) -> list[str]:
        return self.whack.initiate(child, timeout)

    def lines(self) -> list[str]:
        """pluto's log lines since `start_case`, their time stamps stripped."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [_STAMP.sub("", line) for line in text.splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """The case's log lines in the shape of VICI `log` events (lab.diagnose reads both)."""
        return [{"group": "pluto", "msg": line} for line in self.lines()]

    def sas(self) -> list[dict[str, Any]]:
        """pluto's established SAs in VICI's `list-sas` shape, PFS groups from the case's log."""
        report = self.whack.text("--status")
        xfrm = self._xfrm()
        return status.parse(report, xfrm, self._mappings, "\n".join(self.lines()))

    def _xfrm(self) -> str:
        done = self.lab.backend.exec(self.lab.state, self.node, ["ip", "-s", "xfrm", "state"])
        if done.returncode != 0:
            raise PlutoGone(f"{self.node}: cannot read the kernel's XFRM states: "
                            f"{done.stderr.strip()}")
        return done.stdout

    def clean(self, extra: list[str] | None = None) -> None:
        """Delete the case's conns (and so their states); prove nothing is left in pluto or in
        the kernel, else PlutoGone."""
        for name in [*self._conns, *(extra or [])]:
            self.whack.delete(name)
        end = time.monotonic() + CLEAN_TIMEOUT
        while True:
            report = self.whack.text("--status")
            conns = sorted(status.conn_names(report))
            states = status.states(report)
            xfrm = self._xfrm().strip()
            if not conns and not states and not xfrm:
                self._conns = []
                return
            if time.monotonic() >= end:
                raise PlutoGone(f"{self.node}: left after the case: conns {conns}, states "
                                f"{states}, {len(xfrm.splitlines())} line(s) of XFRM state")
            for name in conns:
                self.whack.delete(name)
            time.sleep(0.02)
