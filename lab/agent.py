"""The probe agent: runs inside a lab node (namespace or container) and crafts/captures packets.

Standalone on purpose (stdlib + scapy only): containers run it with their own python3 and
scapy, namespaces with the orchestrator's. It speaks JSON lines: `ready` once its sniffer is
listening, then one result object. Markers are ASCII tokens inside payloads; the orchestrator
chooses them per run so a capture can prove none crossed the internet in clear.

  agent.py listen  --iface IF --port P --prefix PFX --timeout S   (JSON list of markers on stdin)
  agent.py send    --iface IF --port P --timeout S   (JSON list of probes on stdin)
  agent.py capture --iface IF --prefix PFX           (until stdin closes)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading


def _scapy():
    """Only the layers the probes use: `scapy.all` costs ~1 s of CPU per process."""
    from scapy.config import conf

    conf.load_layers = []
    conf.verb = 0
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.packet import Raw
    from scapy.sendrecv import AsyncSniffer, send

    return AsyncSniffer, send, IP, UDP, ICMP, Raw


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _markers(pkt, prefix: bytes) -> list[str]:
    from scapy.packet import Raw

    raw = bytes(pkt[Raw].load) if pkt.haslayer(Raw) else b""
    found, start = [], 0
    while (at := raw.find(prefix, start)) >= 0:
        end = at
        while end < len(raw) and 33 <= raw[end] < 127:
            end += 1
        found.append(raw[at:end].decode())
        start = end
    return found


def listen(args: argparse.Namespace) -> None:
    """Collect the expected UDP markers (JSON list on stdin) until all arrived or time is up.

    Only expected markers count: the node's own outgoing probes pass the same sniffer.
    """
    AsyncSniffer, *_ = _scapy()
    prefix = args.prefix.encode()
    wanted = set(json.loads(sys.stdin.read() or "[]"))
    got: set[str] = set()
    done = threading.Event()

    def seen(pkt) -> None:
        got.update(m for m in _markers(pkt, prefix) if m in wanted)
        if got >= wanted:
            done.set()

    sniffer = _start(AsyncSniffer, iface=args.iface, filter=f"udp dst port {args.port}", prn=seen)
    _emit({"ready": True})
    done.wait(args.timeout)
    sniffer.stop()
    _emit({"received": sorted(got)})


def send(args: argparse.Namespace) -> None:
    """Send each probe once: UDP carries the marker one way; ICMP echo brings it back."""
    AsyncSniffer, l3send, IP, UDP, ICMP, Raw = _scapy()
    probes = json.loads(sys.stdin.read())
    prefix = args.prefix.encode()
    echoed: set[str] = set()
    wanted = {p["marker"] for p in probes if p["proto"] == "icmp"}
    done = threading.Event()

    def seen(pkt) -> None:
        if pkt.haslayer(ICMP) and pkt[ICMP].type == 0:
            echoed.update(_markers(pkt, prefix))
            if wanted <= echoed:
                done.set()

    sniffer = _start(AsyncSniffer, iface=args.iface, filter="icmp", prn=seen)
    for n, p in enumerate(probes):
        ip = IP(src=p["src"], dst=p["dst"])
        if p["proto"] == "udp":
            l3send(ip / UDP(sport=args.port, dport=args.port) / Raw(p["marker"].encode()))
        else:
            l3send(ip / ICMP(id=0x1AB, seq=n) / Raw(p["marker"].encode()))
    if wanted:
        done.wait(args.timeout)
    sniffer.stop()
    _emit({"sent": len(probes), "echoed": sorted(echoed & wanted)})


def capture(args: argparse.Namespace) -> None:
    """Summarise every IPv4 packet on the segment; flag any payload carrying a marker."""
    AsyncSniffer, _, IP, UDP, _, _ = _scapy()
    prefix = args.prefix.encode()
    counts: dict[str, int] = {}
    other: list[str] = []
    leaked: list[str] = []
    first: dict[str, float] = {}

    def seen(pkt) -> None:
        if not pkt.haslayer(IP):
            return
        ip = pkt[IP]
        if pkt.haslayer(UDP) and {pkt[UDP].sport, pkt[UDP].dport} & {500, 4500}:
            port = 500 if 500 in (pkt[UDP].sport, pkt[UDP].dport) else 4500
            kind = "ike" if port == 500 or bytes(pkt[UDP].payload)[:4] == b"\0\0\0\0" else "esp"
            key = f"udp/{port}/{kind}"
        else:
            key = "other"
            if len(other) < 50:
                other.append(pkt.summary())
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(f"{key} {ip.src}>{ip.dst}", pkt.time)
        if prefix in bytes(pkt):
            leaked.append(pkt.summary())

    sniffer = _start(AsyncSniffer, iface=args.iface, prn=seen)
    _emit({"ready": True})
    sys.stdin.read()  # the orchestrator closes stdin to stop the capture
    sniffer.stop()
    _emit({"counts": counts, "other": other, "leaked": leaked[:50],
           "first": {k: float(v) for k, v in first.items()}})


def _start(sniffer_cls, **kwargs):
    """AsyncSniffer opens its socket in a thread: return only once it is listening."""
    started = threading.Event()
    sniffer = sniffer_cls(started_callback=started.set, store=False, **kwargs)
    sniffer.start()
    if not started.wait(10):
        raise SystemExit("sniffer did not start")
    return sniffer


def main() -> None:
    parser = argparse.ArgumentParser(prog="agent.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("listen", "send", "capture"):
        p = sub.add_parser(mode)
        p.add_argument("--iface", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--port", type=int, default=33434)
        p.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    {"listen": listen, "send": send, "capture": capture}[args.mode](args)


if __name__ == "__main__":
    main()
