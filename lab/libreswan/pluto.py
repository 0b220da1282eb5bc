"""One pluto per libreswan customer gateway, everything of it in the gateway's own directory.

pluto is told every path (config, secrets, NSS database, run directory and so its control
socket, log), so several labs' plutos run side by side and none touches /etc/ipsec.* or
/run/pluto. Its NSS database holds no certificate (the lab authenticates with PSKs) but pluto
refuses to start without one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab.errors import LabError
from lab.libreswan.install import PREFIX, tool
from lab.timing import patience

CTL = "pluto.ctl"  # its control socket, in the run directory (whack --ctlsocket)
LOG = "pluto.log"


def init_nss(directory: Path) -> Path:
    """An empty NSS database (no password) in `directory/nss`, made once."""
    nss = directory / "nss"
    if not (nss / "cert9.db").exists():
        nss.mkdir(mode=0o700, exist_ok=True)
        done = subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"],
                              capture_output=True, text=True, timeout=patience(30.0), check=False)
        if done.returncode != 0:
            raise LabError(f"cannot create pluto's NSS database in {nss}: "
                           f"{(done.stderr or done.stdout).strip()}")
    return nss


# pluto runs its helpers (addconn, at start-up) from the path it was built with, which the
# private prefix is not: it runs in a mount namespace of its own where the prefix's libexec is
# bound over /usr/libexec. Nothing outside that namespace sees the mount.
BIND = 'mount --bind "$0" /usr/libexec && exec "$@"'


def argv(directory: Path) -> list[str]:
    """pluto in the foreground (its PID is the lab's to stop: unshare and sh exec it), every
    path the gateway's own."""
    libexec = Path(tool("pluto")).parent.parent
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", BIND,
            str(libexec), str(Path("/usr/libexec/ipsec/pluto")), "--nofork",
            "--config", str(directory / "ipsec.conf"),
            "--secretsfile", str(directory / "ipsec.secrets"), "--rundir", str(directory),
            "--ipsecdir", str(directory), "--nssdir", str(directory / "nss"),
            "--dumpdir", str(directory), "--logfile", str(directory / LOG), "--no-dnssec"]


def environment() -> dict[str, str]:
    """pluto's environment: libreswan's own `ipsec` command first on PATH, since a conn without
    leftupdown= runs `ipsec _updown` (libreswan's default, a user's config relies on it) and
    that must be libreswan's script (it runs /usr/libexec/ipsec/_updown, bound as above)."""
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return {"PATH": f"{PREFIX / 'usr' / 'sbin'}:{path}"}
