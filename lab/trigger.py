"""The traffic trigger: what a trap policy does, for dataplanes where traps do not fire.

Runs on the host, enters the cloud gateway's network namespace, watches its VPC-side interface,
and initiates a traffic-triggered tunnel's CHILD_SA over VICI on the first packet that matches
the CHILD_SA's traffic selectors while that CHILD_SA is not installed (so it also re-triggers
after DPD cleared the tunnel). Started by `up`; stopped by `down` with the lab.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import threading

from pyroute2 import netns

from lab.control import InitiateFailed, Vici
from lab.lifecycle import attach
from lab.plan import LAN

log = logging.getLogger("ipsec-lab.trigger")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.trigger")
    parser.add_argument("--lab", required=True)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s trigger %(message)s")
    lab = attach(args.lab)
    cloud = lab.plan.gateways[0]
    watched = [
        (ch.local_ts, ch.remote_ts, ch.name, conn.tunnel)
        for conn in cloud.connections
        if lab.spec.tunnel(conn.tunnel).negotiation_type == "traffic-triggered"
        for ch in conn.children
    ]
    socket_path = lab.backend.host_dir(lab.state.name, cloud.node) / "charon.vici"
    netns.setns(lab.backend.netns_path(lab.state, cloud.node), flags=0)

    from scapy.config import conf

    conf.load_layers = []
    from scapy.layers.inet import IP
    from scapy.sendrecv import AsyncSniffer

    busy: set[str] = set()
    lock = threading.Lock()

    def fire(child: str, tunnel: str) -> None:
        try:
            with Vici(socket_path) as v:
                installed = any(
                    c.get("name") == child and c.get("state") == "INSTALLED"
                    for sa in v.sas() for c in sa.get("child-sas", {}).values()
                )
                if not installed:
                    log.info("traffic matches %s: initiating", child)
                    v.initiate(child, tunnel)
                    log.info("%s installed", child)
        except InitiateFailed as exc:
            log.info("%s failed: %s", child, exc)
        finally:
            with lock:
                busy.discard(child)

    def seen(pkt) -> None:
        if not pkt.haslayer(IP):
            return
        src, dst = ipaddress.IPv4Address(pkt[IP].src), ipaddress.IPv4Address(pkt[IP].dst)
        for local, remote, child, tunnel in watched:
            if src in local and dst in remote:
                with lock:
                    if child in busy:
                        return
                    busy.add(child)
                threading.Thread(target=fire, args=(child, tunnel), daemon=True).start()
                return

    started = threading.Event()
    sniffer = AsyncSniffer(iface=LAN, filter="ip", prn=seen, store=False,
                           started_callback=started.set)
    sniffer.start()
    started.wait(10)
    print("ready", flush=True)
    log.info("watching %s for %d CHILD_SA(s)", LAN, len(watched))
    sniffer.join()


if __name__ == "__main__":
    main()
