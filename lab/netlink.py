"""Network namespaces from the host: entering one by path, running commands and netlink in it,
and configuring a node's interfaces, addresses, routes and sysctls the way the plan says.

Both backends end up with one namespace per node (`/run/netns/<name>` for netns, a container's
`/proc/<pid>/ns/net` for docker) and configure it the same way from here. The agent fork server
enters namespaces with this module too and must start quickly, so the top level imports only
the standard library: pyroute2 and the plan are imported where they are used.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from lab.errors import LabError
from lab.timing import patience

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from lab.plan import Node

CLONE_NEWNET = 0x40000000
IFF_MULTICAST = 0x1000
_LIBC = ctypes.CDLL(None, use_errno=True)  # resolved before any fork: preexec_fn only calls it


def enter(path: str) -> None:
    """setns(2) this process into the network namespace at `path`; never creates one.

    (os.setns arrives only with Python 3.12.)"""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def entering(path: str) -> Callable[[], None]:
    """A subprocess `preexec_fn` that puts the child into the namespace at `path`."""
    return lambda: enter(path)


def run(path: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command inside the namespace at `path` and wait for it (output captured)."""
    return subprocess.run(argv, preexec_fn=entering(path), capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_checked(path: str, argv: list[str], timeout: float,
                where: str | None = None) -> subprocess.CompletedProcess[str]:
    """`run`, and a LabError naming the command and `where` (default: the path) if it fails."""
    result = run(path, argv, timeout)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed in {where or path}: {result.stderr.strip()}")
    return result


def popen(path: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a command inside the namespace at `path` (subprocess.Popen's keywords)."""
    return subprocess.Popen(argv, preexec_fn=entering(path), **kwargs)


def patient_pyroute2() -> None:
    """pyroute2 does namespace work in a forked child and waits 2 s for its answer; a loaded
    machine (the TCG guest) takes longer, so that wait becomes the lab's patience for its own
    processes (`lab.timing`)."""
    from pyroute2 import config

    config.default_communicate_timeout = max(config.default_communicate_timeout,
                                             round(patience(2.0)))


def socket(path: str) -> IPRoute:
    """A netlink socket inside the namespace at `path` (a context manager); never creates one."""
    from pyroute2 import IPRoute

    patient_pyroute2()
    return IPRoute(netns=path, flags=0)


def pids_in(paths: Iterable[str], exclude: Iterable[int] = ()) -> list[int]:
    """Processes whose network namespace is one of `paths`, except `exclude`.

    Found through /proc, so also processes of an orchestrator that was killed. The caller's own
    namespace and PID 1's are never matched: a stale or wrong path must not reach the host's
    processes."""
    wanted: set[tuple[int, int]] = set()
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            wanted.add((st.st_dev, st.st_ino))
    for host in ("/proc/self/ns/net", "/proc/1/ns/net"):
        with contextlib.suppress(OSError):
            st = os.stat(host)
            wanted.discard((st.st_dev, st.st_ino))
    if not wanted:
        return []
    skip = set(exclude)
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{entry}/ns/net")
            if (st.st_dev, st.st_ino) in wanted:
                found.append(int(entry))
    return found


# -- a node's settings -------------------------------------------------------------------------
def sysctls(node: Node) -> dict[str, str]:
    """A node's sysctls: forwarding as the plan says, no reverse-path filter, no IPv6."""
    return {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
        "net.ipv4.ip_forward": "1" if node.forwarding else "0",
    }


def sysctl_script(node: Node) -> str:
    """`sysctls` as shell lines run inside the namespace: /proc/sys/net is per namespace."""
    return "; ".join(f"echo {value} > /proc/sys/{key.replace('.', '/')}"
                     for key, value in sysctls(node).items())


def configure_node(ipr: IPRoute, node: Node) -> None:
    """Addresses, bridge, links up and routes of one node, inside its network namespace.

    Shared by both backends (docker runs it after renaming docker's interfaces to the plan's).
    The internet bridge is created with neither multicast nor snooping: a bridge that comes up
    with either joins groups and repeats IGMPv3 reports for seconds, which the wire check would
    count as non-IKE traffic.
    """
    from lab.plan import WAN

    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    bridge = None
    if node.bridge:
        ipr.link("add", ifname=node.bridge, kind="bridge", br_mcast_snooping=0)
        bridge = ipr.link_lookup(ifname=node.bridge)[0]
        _no_multicast(ipr, bridge)
    for iface in node.interfaces:
        if iface.if_id is not None:  # an XFRM interface: it exists once created here
            ipr.link("add", ifname=iface.name, kind="xfrm", xfrm_if_id=iface.if_id,
                     xfrm_link=ipr.link_lookup(ifname=WAN)[0])
    for iface in node.interfaces:
        found = ipr.link_lookup(ifname=iface.name)
        if not found:
            continue  # docker: an inet port of a gateway sharing its uplink network with another
        index = found[0]
        for addr in iface.addresses:
            ipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        if iface.mtu is not None:
            ipr.link("set", index=index, mtu=iface.mtu)
        if bridge is not None:
            ipr.link("set", index=index, master=bridge)
        if iface.name == WAN or bridge is not None:
            _no_multicast(ipr, index)
        ipr.link("set", index=index, state="up")
    if bridge is not None:
        ipr.link("set", index=bridge, state="up")
    for route in node.routes:
        spec: dict[str, Any] = {"dst": str(route.destination)}
        if route.via:
            spec["gateway"] = str(route.via)
        if route.device:
            spec["oif"] = ipr.link_lookup(ifname=route.device)[0]
            if not route.via:
                # link scope, as `ip route add ... dev` gives it: a gateway reached over such a
                # route is then a valid next hop, which the kernel dataplane's source routes
                # (strongSwan's table 220: peer subnet via the peer) need
                spec["scope"] = 253
        ipr.route("add", **spec)


def _no_multicast(ipr: IPRoute, index: int) -> None:
    """No IGMP reports on the internet segment: the wire check expects IKE and ESP only."""
    ipr.link("set", index=index, flags=0, change=IFF_MULTICAST)
