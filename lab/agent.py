"""The probe agent: runs inside a lab node (namespace or container) and crafts/captures packets.

Standalone on purpose (stdlib + scapy only): containers run it with their own python3 and
scapy, namespaces with the orchestrator's. It speaks JSON lines: `ready` once its sniffer is
listening, then one result object. Markers are ASCII tokens inside payloads; the orchestrator
chooses them per run so a capture can prove none crossed the internet in clear.

  agent.py listen  --iface IF --port P --prefix PFX --timeout S   (JSON list of markers on stdin)
  agent.py send    --iface IF --port P --timeout S   (JSON list of probes on stdin)
  agent.py capture --iface IF --prefix PFX           (until stdin closes)
  agent.py serve   --iface IF [--echo] [--capture]   (long-running: one JSON command per line)

`serve` keeps scapy, its sockets and sniffers alive across many exchanges (the interop matrix
runs hundreds of cases per lab): after `ready`, each stdin line is one command and gets one
reply line. `ping` sends ICMP echoes carrying markers and waits for their replies (`--echo`);
`arm` resets the segment counters of the persistent capture (`--capture`) and sets the marker
prefix; `counts` returns what the capture saw since `arm`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time


def _scapy():
    """Only the layers the probes use: `scapy.all` costs ~1 s of CPU per process."""
    from scapy.config import conf

    conf.load_layers = []
    conf.verb = 0
    conf.bufsize = 1 << 22  # socket buffers: a burst of probes must not overflow the sniffer
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.packet import Raw
    from scapy.sendrecv import AsyncSniffer, send

    return AsyncSniffer, send, IP, UDP, ICMP, Raw


class _KernelRouted:
    """Sends IP packets through a raw socket: the kernel routes each one, so a route change
    (a failover) applies at once; scapy's own L3 socket routes from a table read at start-up."""

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, pkt) -> str | None:
        """None once sent; else why the host refused it, in words."""
        try:
            self._sock.sendto(bytes(pkt), (pkt.dst, 0))
        except OSError as exc:
            return refusal(exc)
        return None

    def close(self) -> None:
        self._sock.close()


def refusal(exc: OSError) -> str:
    """Why the host would not send a packet, in a network engineer's words."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    why = {errno.EPERM: "refused by the host: a firewall on the host?",
           errno.EACCES: "refused by the host: a firewall on the host?",
           errno.ENETUNREACH: "no route to the destination on the host",
           errno.EHOSTUNREACH: "the destination is unreachable from the host",
           errno.EMSGSIZE: "larger than the path MTU"}.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{why} ({name})"


ESP_IN_UDP, ESP_RAW = "udp/4500/esp", "ip/50/esp"
ESP_KINDS = (ESP_IN_UDP, ESP_RAW)
ESP_PROTO = 50
FRAGMENT = "ip/fragment"
NAT_KEEPALIVE = "udp/4500/keepalive"  # RFC 3948: one 0xFF byte that holds a NAT mapping open


def wire_kind(pkt, IP, UDP) -> str:
    """udp/500/ike, udp/4500/ike (non-ESP marker), udp/4500/esp (UDP-encapsulated: libipsec
    always, the kernel behind NAT), udp/4500/keepalive (NAT-T), ip/50/esp (the kernel's ESP
    without NAT), ip/fragment, or other."""
    if pkt.haslayer(IP) and pkt[IP].frag:
        return FRAGMENT  # the rest of a packet too big for the path, its kind in the first part
    if pkt.haslayer(IP) and pkt[IP].proto == ESP_PROTO:
        return ESP_RAW
    if pkt.haslayer(UDP) and {pkt[UDP].sport, pkt[UDP].dport} & {500, 4500}:
        port = 500 if 500 in (pkt[UDP].sport, pkt[UDP].dport) else 4500
        payload = bytes(pkt[UDP].payload)
        if port == 4500 and payload == b"\xff":
            return NAT_KEEPALIVE
        kind = "ike" if port == 500 or payload[:4] == b"\0\0\0\0" else "esp"
        return f"udp/{port}/{kind}"
    return "other"


def _counted(seg: dict, esp: int) -> bool:
    return esp_packets(seg["counts"]) >= esp


SO_RCVBUFFORCE = 33  # socket.SO_RCVBUFFORCE is missing from some Python builds
SOL_PACKET, PACKET_STATISTICS = 263, 6


def _stop(sniffer) -> int:
    """Stop a sniffer started by `_start` and close its socket; the packets the kernel dropped
    because the sniffer's buffer was full (a capture that missed packets must say so)."""
    import struct

    sniffer.stop()
    sock = getattr(sniffer, "lab_socket", None)
    if sock is None:
        return 0
    try:
        _, drops = struct.unpack("II", sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        drops = 0
    sock.close()
    return int(drops)


def esp_packets(counts: dict[str, int]) -> int:
    """ESP packets of either encapsulation in a capture's counts."""
    return sum(counts.get(k, 0) for k in ESP_KINDS)


def encapsulation(counts: dict[str, int]) -> str:
    """In words, which ESP encapsulation a capture saw."""
    seen = [name for kind, name in ((ESP_RAW, "ESP (IP protocol 50)"),
                                    (ESP_IN_UDP, "ESP in UDP 4500")) if counts.get(kind)]
    return " and ".join(seen) or "no ESP"


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _markers(pkt, prefix: bytes) -> list[str]:
    from scapy.packet import Raw

    return _markers_in(bytes(pkt[Raw].load) if pkt.haslayer(Raw) else b"", prefix)


def _markers_in(raw: bytes, prefix: bytes) -> list[str]:
    """The markers in a packet's bytes (an ICMP error's quoted packet too, which scapy may split
    into several layers when it reads RFC 4884 extensions into it)."""
    found, start = [], 0
    while (at := raw.find(prefix, start)) >= 0:
        end = at
        while end < len(raw) and 33 <= raw[end] < 127:
            end += 1
        found.append(raw[at:end].decode())
        start = end
    return found


def listen(args: argparse.Namespace) -> None:
    """Collect UDP markers until every expected one arrived or time is up.

    stdin: one line, a JSON list of expected markers, or {"expect": [...], "watch": [...]} where watched
    markers (to unrouted destinations) are recorded if they arrive but never waited for. Only
    listed markers count: the node's own outgoing probes pass the same sniffer.
    """
    AsyncSniffer, *_ = _scapy()
    prefix = args.prefix.encode()
    spec = json.loads(sys.stdin.readline() or "[]")
    wanted = set(spec if isinstance(spec, list) else spec.get("expect", []))
    watched = set() if isinstance(spec, list) else set(spec.get("watch", []))
    got: set[str] = set()
    done = threading.Event()

    def seen(pkt) -> None:
        got.update(m for m in _markers(pkt, prefix) if m in wanted | watched)
        if got >= wanted:
            done.set()

    sniffer = _start(AsyncSniffer, iface=args.iface, filter=f"udp dst port {args.port}", prn=seen)
    _emit({"ready": True})
    sys.stdin.read()  # the time-out runs from when the senders start (stdin closed), not from now
    done.wait(args.timeout)
    _stop(sniffer)
    _emit({"received": sorted(got)})


def send(args: argparse.Namespace) -> None:
    """Send each probe: UDP carries the marker one way; ICMP echo brings it back.

    Probes with "expect": false (unrouted destinations) go first, once, and are not waited for.
    An ICMP probe with "size" is padded to that many bytes of IP packet and sent with DF set
    (the MTU probe): an ICMP "fragmentation needed" quoting it is recorded as `too_big`, with the
    MTU it names and who sent it, and the probe is not sent again.
    The others are sent again `--retries` times, spaced over the time-out (UDP always, since the
    sender cannot see them arrive; ICMP until echoed): a probe lost once to a full queue on a
    loaded machine is not a tunnel that does not carry traffic. Loss is the scenarios' measure.
    """
    AsyncSniffer, l3send, IP, UDP, ICMP, Raw = _scapy()
    probes = sorted(json.loads(sys.stdin.read()), key=lambda p: p.get("expect", True))
    prefix = args.prefix.encode()
    echoed: set[str] = set()
    too_big: dict[str, list] = {}  # marker -> [next-hop MTU, who said so]
    wanted = {p["marker"] for p in probes if p["proto"] == "icmp" and p.get("expect", True)}
    watched = {p["marker"] for p in probes if p["proto"] == "icmp"}
    done = threading.Event()

    def seen(pkt) -> None:
        if pkt.haslayer(ICMP) and pkt[ICMP].type == 0:
            echoed.update(_markers(pkt, prefix))
        elif pkt.haslayer(ICMP) and (pkt[ICMP].type, pkt[ICMP].code) == (3, 4):
            for marker in _markers_in(bytes(pkt[ICMP].payload), prefix):  # Linux quotes enough
                too_big.setdefault(marker, [int(pkt[ICMP].nexthopmtu), pkt[IP].src])
        if wanted <= echoed | set(too_big):
            done.set()

    flt = "icmp[icmptype] == icmp-echoreply or (icmp[icmptype] == icmp-unreach and icmp[icmpcode] == 4)"
    sniffer = _start(AsyncSniffer, iface=args.iface, filter=flt, prn=seen)

    sock = _KernelRouted()  # one socket for all probes: scapy's send() opens one per packet
    t_first = time.time()
    rounds = 1 + max(0, args.retries)
    gap = args.timeout / (rounds + 1)
    batch = probes
    refused: dict[str, str] = {}  # marker -> why the host did not send it
    for r in range(rounds):
        for n, p in enumerate(batch):
            ip = IP(src=p["src"], dst=p["dst"])
            if p["proto"] == "udp":
                why = sock.send(ip / UDP(sport=args.port, dport=args.port) / Raw(p["marker"].encode()))
            elif "size" in p:  # DF, padded to `size` bytes of IP packet (20 IP + 8 ICMP)
                payload = p["marker"].encode().ljust(max(0, int(p["size"]) - 28), b"\0")
                why = sock.send(IP(src=p["src"], dst=p["dst"], flags="DF")
                                / ICMP(id=0x1AB, seq=n & 0xFFFF) / Raw(payload))
            else:
                why = sock.send(ip / ICMP(id=0x1AB, seq=n & 0xFFFF) / Raw(p["marker"].encode()))
            if why:
                refused[p["marker"]] = why
            if n % 20 == 19:
                time.sleep(args.pace)  # bursts of hundreds overflow libipsec's TUN queue (500)
        batch = [p for p in probes if p.get("expect", True)
                 and (p["proto"] == "udp" or p["marker"] not in echoed | set(too_big))]
        if r == rounds - 1 or not batch:
            break
        if not done.wait(gap):
            continue
        time.sleep(min(gap, 0.2))  # echoes are all back: UDP again after a short breath
    sock.close()
    if wanted:
        done.wait(max(0.0, args.timeout - (time.time() - t_first)))
    _stop(sniffer)
    _emit({"sent": len(probes), "echoed": sorted(echoed & watched), "t_first": t_first,
           "refused": refused, "too_big": {m: v for m, v in too_big.items() if m in watched}})


def capture(args: argparse.Namespace) -> None:
    """Summarise every IPv4 packet on the segment; flag any payload carrying a marker."""
    AsyncSniffer, _, IP, UDP, _, _ = _scapy()
    prefix = args.prefix.encode()
    counts: dict[str, int] = {}
    other: list[str] = []
    leaked: list[str] = []
    readable: list[str] = []  # a marker inside ESP: ESP NULL (integrity only) carries it readable
    first: dict[str, float] = {}
    flows: dict[str, int] = {}

    def seen(pkt) -> None:
        if not pkt.haslayer(IP):
            return
        ip = pkt[IP]
        key = wire_kind(pkt, IP, UDP)
        if key == "other" and len(other) < 50:
            other.append(pkt.summary())
        counts[key] = counts.get(key, 0) + 1
        flow = f"{key} {ip.src}>{ip.dst}"
        first.setdefault(flow, pkt.time)
        flows[flow] = flows.get(flow, 0) + 1
        if prefix in bytes(pkt):
            (readable if key in ESP_KINDS else leaked).append(pkt.summary())

    sniffer = _start(AsyncSniffer, iface=args.iface, prn=seen)
    _emit({"ready": True})
    sys.stdin.read()  # the orchestrator closes stdin to stop the capture
    _stop(sniffer)
    _emit({"counts": counts, "other": other, "leaked": leaked[:50], "readable": readable[:50],
           "flows": flows,
           "first": {k: float(v) for k, v in first.items()}})


def serve(args: argparse.Namespace) -> None:
    """Long-running exchanges: one JSON command per stdin line, one JSON reply line each."""
    from scapy.config import conf

    AsyncSniffer, _, IP, UDP, ICMP, Raw = _scapy()
    lock = threading.Condition()
    echoed: set[str] = set()
    seg: dict = {"armed": False, "prefix": b"", "counts": {}, "other": [], "leaked": [],
                 "readable": []}
    echo_prefix = [b""]

    def on_echo(pkt) -> None:
        if pkt.haslayer(ICMP) and pkt[ICMP].type == 0 and echo_prefix[0]:
            found = _markers(pkt, echo_prefix[0])
            if found:
                with lock:
                    echoed.update(found)
                    lock.notify_all()

    def on_segment(pkt) -> None:
        if not seg["armed"] or not pkt.haslayer(IP):
            return
        key = wire_kind(pkt, IP, UDP)
        if key == "other" and len(seg["other"]) < 20:
            seg["other"].append(pkt.summary())
        marked = seg["prefix"] and seg["prefix"] in bytes(pkt)
        found = seg["readable"] if key in ESP_KINDS else seg["leaked"]  # see capture()
        with lock:
            seg["counts"][key] = seg["counts"].get(key, 0) + 1
            if marked and len(found) < 20:
                found.append(pkt.summary())
            lock.notify_all()

    sniffers = []
    if args.echo:
        sniffers.append(_start(AsyncSniffer, iface=args.iface, filter="icmp", prn=on_echo))
    if args.capture:
        sniffers.append(_start(AsyncSniffer, iface=args.iface, prn=on_segment))
    sock = conf.L3socket() if args.echo else None
    _emit({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "ping":
            probes = cmd["probes"]
            wanted = {p["marker"] for p in probes}
            with lock:
                echo_prefix[0] = cmd["prefix"].encode()
                echoed.clear()
            if sock is None:
                raise SystemExit("ping needs --echo")  # the orchestrator always passes it
            for n, p in enumerate(probes):
                sock.send(IP(src=p["src"], dst=p["dst"]) / ICMP(id=0x1AC, seq=n)
                          / Raw(p["marker"].encode()))
            with lock:
                lock.wait_for(functools.partial(wanted.issubset, echoed),
                              timeout=float(cmd.get("timeout", 2.0)))
                got = sorted(echoed & wanted)
            _emit({"op": op, "echoed": got})
        elif op == "arm":
            with lock:
                seg.update(armed=True, prefix=cmd["prefix"].encode(), counts={}, other=[], leaked=[],
                           readable=[])
            _emit({"op": op})
        elif op == "counts":
            # wait until the capture has seen the expected ESP packets (it lags the probe a little)
            esp = int(cmd.get("esp", 0))
            with lock:
                lock.wait_for(functools.partial(_counted, seg, esp),
                              timeout=float(cmd.get("timeout", 1.0)))
                _emit({"op": op, "counts": dict(seg["counts"]), "other": list(seg["other"]),
                       "leaked": list(seg["leaked"]), "readable": list(seg["readable"])})
                seg["armed"] = False
        elif op == "quit":
            break
        else:
            _emit({"op": op, "error": f"unknown op {op!r}"})
    for sniffer in sniffers:
        _stop(sniffer)


def stream(args: argparse.Namespace) -> None:
    """A sequence-numbered stream to `--dst`, and a record of the peer's stream arriving here.

    Waits for `go` on stdin, sends UDP (and ICMP echo) at `--rate` per second until a `stop`
    line (answered `stopped`) or the end of stdin, keeps listening until stdin closes, then
    reports every packet sent and received with its time (the host's clock, the same for every
    node), so the orchestrator can derive loss, duplicates, reordering and outage windows around
    events. Two steps so that neither end stops listening while the other still sends.
    """
    AsyncSniffer, _, IP, UDP, ICMP, Raw = _scapy()

    prefix, tag = args.prefix, args.tag
    received: list[tuple[str, int, float]] = []  # (kind, seq, time)

    def seen(pkt) -> None:
        for marker in _markers(pkt, prefix.encode()):
            parts = marker.split("-")  # PREFIX-TAG-KIND-SEQ
            if len(parts) == 4 and parts[1] != tag:
                kind = "udp" if pkt.haslayer(UDP) else "icmp"
                received.append((kind, int(parts[3]), float(pkt.time)))
            elif len(parts) == 4 and pkt.haslayer(ICMP) and pkt[ICMP].type == 0:
                received.append(("echo", int(parts[3]), float(pkt.time)))

    flt = f"(udp dst port {args.port}) or (icmp and icmp[icmptype] == icmp-echoreply)"
    sniffer = _start(AsyncSniffer, iface=args.iface, filter=flt, prn=seen)
    _emit({"ready": True})
    if sys.stdin.readline().strip() != "go":
        _stop(sniffer)
        return
    stop, end = threading.Event(), threading.Event()
    threading.Thread(target=_stream_control, args=(stop, end), daemon=True).start()
    sock = _KernelRouted()
    sent: list[tuple[int, float]] = []
    interval, seq = 1.0 / args.rate, 0
    pad = b"\0" * max(0, args.size)  # ends the marker (not printable); volume for byte lifetimes
    next_at = time.monotonic()
    while not stop.is_set():
        seq += 1
        ip = IP(src=args.src, dst=args.dst)
        sock.send(ip / UDP(sport=args.port, dport=args.port)
                  / Raw(f"{prefix}-{tag}-u-{seq}".encode() + pad))
        if args.icmp:
            sock.send(ip / ICMP(id=0x1AC, seq=seq & 0xFFFF) / Raw(f"{prefix}-{tag}-i-{seq}".encode()))
        sent.append((seq, time.time()))
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))
    _emit({"stopped": seq})
    end.wait()
    time.sleep(args.drain)  # packets still in flight
    drops = _stop(sniffer)
    sock.close()
    _emit({"tag": tag, "sent": sent, "received": received, "capture_drops": drops})


def _stream_control(stop: threading.Event, end: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            stop.set()
    stop.set()
    end.set()


def hostile(args: argparse.Namespace) -> None:
    """Malformed and unexpected traffic at the gateways, from the internet segment (bounded).

    Targets come as JSON on stdin: [{"ip": ..., "mac": ..., "peer": ...}]. Every packet is sent
    at layer 2 on the segment (this node has no address of its own); spoofed sources are taken
    from 192.0.2.0/24 only. ESP frames seen on the segment are captured first and replayed last.
    """
    import random
    import struct

    AsyncSniffer, _, IP, UDP, _, Raw = _scapy()
    from scapy.layers.l2 import Ether
    from scapy.sendrecv import sendp

    targets = json.loads(sys.stdin.read())
    rnd = random.Random(args.seed)
    esp: list = []
    got = threading.Event()

    def keep(pkt) -> None:
        if wire_kind(pkt, IP, UDP) in ESP_KINDS:
            if len(esp) < args.replay:
                esp.append(pkt)
            if len(esp) >= args.replay:
                got.set()

    sniffer = _start(AsyncSniffer, iface=args.iface, filter="udp port 4500 or ip proto 50",
                     prn=keep)
    got.wait(10)
    _stop(sniffer)

    def ike(spi_i: bytes, exchange: int, length: int | None = None, body: bytes = b"",
            next_payload: int = 33) -> bytes:
        header = spi_i + b"\0" * 8 + bytes([next_payload, 0x20, exchange, 0x08]) + b"\0\0\0\0"
        total = 28 + len(body) if length is None else length
        return header + struct.pack("!I", total) + body

    sent: dict[str, int] = {}

    def out(kind: str, frame) -> None:
        sendp(frame, iface=args.iface, verbose=False)
        sent[kind] = sent.get(kind, 0) + 1

    for t in targets:
        eth = Ether(dst=t["mac"])
        real = IP(src=t["peer"], dst=t["ip"])
        spi = rnd.randbytes(8)
        out("truncated IKE header", eth / real / UDP(sport=500, dport=500) / Raw(ike(spi, 34)[:10]))
        out("oversized IKE length", eth / real / UDP(sport=500, dport=500)
            / Raw(ike(spi, 34, length=65000, body=rnd.randbytes(64))))
        bad_payload = bytes([0, 0]) + struct.pack("!H", 2) + rnd.randbytes(40)  # length < header
        out("bad payload length", eth / real / UDP(sport=500, dport=500)
            / Raw(ike(spi, 34, body=bad_payload)))
        out("unknown exchange type", eth / real / UDP(sport=500, dport=500)
            / Raw(ike(spi, 99, body=rnd.randbytes(32))))
        out("IKE on 4500 with garbage", eth / real / UDP(sport=4500, dport=4500)
            / Raw(b"\0" * 4 + ike(spi, 37, body=rnd.randbytes(48))))
        for _ in range(args.flood):
            src = f"192.0.2.{rnd.randrange(1, 255)}"
            sa = bytes([0, 0]) + struct.pack("!H", 44) + rnd.randbytes(40)
            out("IKE_SA_INIT flood (spoofed)", eth / IP(src=src, dst=t["ip"])
                / UDP(sport=rnd.randrange(1024, 65535), dport=500) / Raw(ike(rnd.randbytes(8), 34, body=sa)))
        for n in range(args.unknown_spi):
            esp_body = Raw(rnd.randbytes(4) + struct.pack("!I", n + 1) + rnd.randbytes(64))
            if args.esp == "raw":  # the kernel's ESP without NAT: IP protocol 50
                out("ESP with unknown SPI", eth / IP(src=t["peer"], dst=t["ip"], proto=ESP_PROTO)
                    / esp_body)
            else:
                out("ESP with unknown SPI", eth / real / UDP(sport=4500, dport=4500) / esp_body)
    for frame in esp:
        out("replayed ESP", frame)
    _emit({"sent": sent, "captured_esp": len(esp)})


RECEIVE_BUFFER = 1 << 24  # bytes: seconds of a 1000-byte stream while the agent is descheduled


def _start(sniffer_cls, **kwargs):
    """AsyncSniffer opens its socket in a thread: return only once it is listening.

    The socket is opened here so its receive buffer can be raised past net.core.rmem_max
    (SO_RCVBUFFORCE, CAP_NET_ADMIN): at the default ~200 KB a slow guest that stalls the agent
    for half a second drops stream packets in the capture, and they would read as lost.
    """
    import socket

    from scapy.config import conf

    if "iface" in kwargs:
        sock = conf.L2listen(iface=kwargs.pop("iface"), filter=kwargs.pop("filter", None))
        try:
            sock.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:
            sock.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        kwargs["opened_socket"] = sock
    started = threading.Event()
    sniffer = sniffer_cls(started_callback=started.set, store=False, **kwargs)
    sniffer.lab_socket = kwargs.get("opened_socket")
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
        p.add_argument("--pace", type=float, default=0.01, help="pause after every 20 packets (s)")
        p.add_argument("--retries", type=int, default=0, help="send: rounds after the first")
    p = sub.add_parser("serve")
    p.add_argument("--iface", required=True)
    p.add_argument("--echo", action="store_true", help="answer `ping` commands")
    p.add_argument("--capture", action="store_true", help="count the segment for `arm`/`counts`")
    p = sub.add_parser("stream")
    p.add_argument("--iface", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--tag", required=True, help="this end's direction tag, e.g. i2v")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=33600)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--icmp", action="store_true")
    p.add_argument("--drain", type=float, default=0.5)
    p.add_argument("--size", type=int, default=0, help="UDP padding bytes after the marker")
    p = sub.add_parser("hostile")
    p.add_argument("--iface", required=True)
    p.add_argument("--flood", type=int, default=100, help="spoofed IKE_SA_INIT per target")
    p.add_argument("--unknown-spi", type=int, default=20)
    p.add_argument("--replay", type=int, default=20, help="ESP frames to capture and replay")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--esp", choices=["udp", "raw"], default="udp",
                   help="ESP encapsulation of the unknown-SPI packets (raw: IP protocol 50)")
    args = parser.parse_args()
    modes = {"listen": listen, "send": send, "capture": capture, "serve": serve, "stream": stream,
             "hostile": hostile}
    try:
        modes[args.mode](args)
    except Exception as exc:  # noqa: BLE001 - the orchestrator reports it as a reason
        why = refusal(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        _emit({"error": f"probe agent ({args.mode}) failed: {why}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
