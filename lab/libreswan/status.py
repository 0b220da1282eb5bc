"""pluto's own status report (`whack --status`) read into the dictionaries strongSwan's VICI
`list-sas` gives, so `lab.verify` judges a libreswan gateway with the same rules as charon.

libreswan reports per connection (one conn per SPD mapping here) the algorithms its newest IKE
and IPsec SA negotiated, and per state (`#N`) whether it is established and, for IPsec SAs, the
SPIs. Packet counts come from the kernel's XFRM states by SPI (`ip -s xfrm state` in the
gateway's namespace): pluto counts bytes only. Names are translated into strongSwan's (MODP2048
-> MODP_2048, DH19 -> ECP_256, AES_GCM_16_256 -> AES_GCM_16/256, an IKE SA's PRF HMAC_SHA2_256
-> PRF_HMAC_SHA2_256 and its integrity HMAC_SHA2_256_128).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Sa = dict[str, Any]

_STATE = re.compile(r'^#(\d+): "([^"]+)"(?:\[\d+\])?(?::(\d+))? (STATE_\w+) \(([^)]*)\);(.*)$')
_SPIS = re.compile(r'^#(\d+): "([^"]+)"(?:\[\d+\])? (esp\..*)$')
_CONN = re.compile(r'^"([^"]+)"(?:\[\d+\])?:\s+(.*)$')
_SPI = re.compile(r"esp\.([0-9a-f]+)@([0-9.]+)")
_PARENT = re.compile(r"(?:IKE SA|ISAKMP SA|isakmp)\s*#(\d+)")
_HOST = re.compile(r"(\d+\.\d+\.\d+\.\d+)")

# IKEv1 Main/Aggressive Mode and IKEv2: the states of an established IKE SA; of an installed
# IPsec SA (Quick Mode, or an IKEv2 Child SA)
IKE_ESTABLISHED = {"STATE_V2_ESTABLISHED_IKE_SA", "STATE_MAIN_R3", "STATE_MAIN_I4",
                   "STATE_AGGR_R2", "STATE_AGGR_I2"}
CHILD_INSTALLED = {"STATE_V2_ESTABLISHED_CHILD_SA", "STATE_QUICK_R2", "STATE_QUICK_I2"}

DH = {"DH19": "ECP_256", "DH20": "ECP_384", "DH21": "ECP_521", "DH31": "CURVE_25519",
      "DH22": "MODP_1024_160", "DH23": "MODP_2048_224", "DH24": "MODP_2048_256"}
# an IKE SA's PRF -> the integrity algorithm libreswan pairs with it (printed only when other)
PRF_INTEG = {"HMAC_MD5": "HMAC_MD5_96", "HMAC_SHA1": "HMAC_SHA1_96",
             "HMAC_SHA2_256": "HMAC_SHA2_256_128", "HMAC_SHA2_384": "HMAC_SHA2_384_192",
             "HMAC_SHA2_512": "HMAC_SHA2_512_256"}


def dh_group(name: str) -> str | None:
    """MODP2048 -> MODP_2048, DH19 -> ECP_256; None for none."""
    if name in ("", "NONE", "<Phase1>", "<N/A>"):
        return None
    if m := re.fullmatch(r"MODP(\d+)", name):
        return f"MODP_{m.group(1)}"
    return DH.get(name, name)


def encryption(token: str) -> tuple[str, str | None]:
    """AES_CBC_128 -> (AES_CBC, 128); AES_GCM_16_256 -> (AES_GCM_16, 256); 3DES_CBC_192 ->
    (3DES_CBC, None): strongSwan gives no key size for fixed-size ciphers."""
    m = re.fullmatch(r"(.+?)_(\d+)", token)
    if m is None or m.group(1) in ("AES_GCM", "AES_CCM"):
        return token, None
    name, bits = m.group(1), m.group(2)
    if name in ("3DES_CBC", "3DES", "NULL"):
        return ("3DES_CBC" if name.startswith("3DES") else name), None
    return name, bits


def ike_algorithms(text: str) -> Sa:
    """`AES_CBC_128-HMAC_SHA2_256-MODP2048` (encryption-PRF[-integrity]-DH) as list-sas keys."""
    parts = text.split("-")
    encr, bits = encryption(parts[0])
    out: Sa = {"encr-alg": encr}
    if bits:
        out["encr-keysize"] = bits
    prf = parts[1] if len(parts) > 1 else ""
    dh = parts[-1] if len(parts) > 2 else ""
    integ = parts[2] if len(parts) > 3 else None
    if prf:
        out["prf-alg"] = f"PRF_{prf}"
    aead = encr.startswith(("AES_GCM", "AES_CCM", "CHACHA20"))
    if not aead and (integ or PRF_INTEG.get(prf)):
        out["integ-alg"] = integ or PRF_INTEG[prf]
    if group := dh_group(dh):
        out["dh-group"] = group
    return out


def esp_algorithms(text: str) -> Sa:
    """`AES_CBC_128-HMAC_SHA1_96; pfsgroup=MODP2048` as list-sas keys (the DH group: PFS)."""
    algs, _, pfs = text.partition(";")
    encr_text, _, integ = algs.strip().partition("-")
    encr, bits = encryption(encr_text)
    out: Sa = {"encr-alg": encr}
    if bits:
        out["encr-keysize"] = bits
    if integ and integ != "NONE":
        out["integ-alg"] = integ
    group = pfs.strip().removeprefix("pfsgroup=")
    if dh := dh_group(group):
        out["dh-group"] = dh
    return out


@dataclass
class _Conn:
    lines: dict[str, str] = field(default_factory=dict)
    local_ts: str | None = None
    remote_ts: str | None = None
    local_host: str | None = None
    remote_host: str | None = None


def _conns(status: str) -> dict[str, _Conn]:
    conns: dict[str, _Conn] = {}
    for raw in status.splitlines():
        line = raw.removeprefix("000 ").strip()
        m = _CONN.match(line)
        if not m:
            continue
        c = conns.setdefault(m.group(1), _Conn())
        body = m.group(2)
        if "..." in body and "===" in body and c.local_ts is None:
            left, _, right = body.split(";")[0].partition("...")
            lts, _, lhost = left.partition("===")
            rhost, _, rts = right.partition("===")
            c.local_ts, c.remote_ts = lts.strip(), rts.strip()
            c.local_host, c.remote_host = _first_host(lhost), _first_host(rhost)
        if m2 := re.match(r"(IKE|IKEv1|IKEv2|ESP) algorithm newest: (.*)$", body):
            c.lines[f"{m2.group(1)[:3]} newest"] = m2.group(2).strip()
        if m2 := re.match(r"policy: ([^;]+);", body):
            c.lines["policy"] = m2.group(1)
        if m2 := re.search(r"our id=([^;]+); their idtype: \w+; their id=([^;]+)", body):
            c.lines["our id"], c.lines["their id"] = m2.group(1).strip(), m2.group(2).strip()
    return conns


def conn_names(status: str) -> set[str]:
    """The conns pluto has loaded, by `whack --status`."""
    return set(_conns(status))


def states(status: str) -> list[str]:
    """The serials of every state pluto holds (established or not), by `whack --status`."""
    return [m.group(1) for raw in status.splitlines()
            if (m := _STATE.match(raw.removeprefix("000 ").strip()))]


def _first_host(text: str) -> str | None:
    """The gateway's address in one end of a conn line (`198.51.100.2[id]`, `<nexthop>`...)."""
    m = _HOST.search(text)
    return m.group(1) if m else None


def _spi_key(spi: str) -> str:
    """An SPI in hex as both pluto and ip-xfrm may print it (leading zeros or not)."""
    return spi.lstrip("0") or "0"


def _packets(xfrm: str) -> dict[str, int]:
    """SPI (hex, as pluto prints it) -> packets the kernel counted on that XFRM state."""
    out: dict[str, int] = {}
    spi: str | None = None
    for line in xfrm.splitlines():
        if m := re.search(r"proto esp spi 0x([0-9a-f]+)", line):
            spi = _spi_key(m.group(1))
        elif spi and (m := re.search(r"(\d+)\(bytes\), (\d+)\(packets\)", line)):
            out[spi] = int(m.group(2))
            spi = None
    return out


def _encapsulated(xfrm: str) -> set[str]:
    """SPIs (as `_spi_key` keys them) whose XFRM state wraps ESP in UDP (NAT traversal)."""
    out: set[str] = set()
    spi: str | None = None
    for line in xfrm.splitlines():
        if m := re.search(r"proto esp spi 0x([0-9a-f]+)", line):
            spi = _spi_key(m.group(1))
        elif spi and "encap type espinudp" in line:
            out.add(spi)
    return out


_INSTALLED = re.compile(r'^.*?"[^"]+"(?:\[\d+\])? #(\d+): .*\{ESP[^}]*\bxfrm=([A-Za-z0-9_-]+)')


def child_groups(log: str) -> dict[str, str]:
    """IPsec SA serial -> the DH group its negotiation used (PFS), from pluto's log line of
    each installed SA (`... {ESP=>0x.. <0x.. xfrm=AES_CBC_128-HMAC_SHA1_96-MODP2048 ...}`).

    The log, because whack's status shows only the PFS policy (`pfsgroup=<Phase1>`), never the
    group an IKEv2 CHILD_SA rekey or an IKEv1 Quick Mode negotiated."""
    out: dict[str, str] = {}
    for line in log.splitlines():
        if m := _INSTALLED.match(line):
            groups = [t for t in m.group(2).split("-") if re.fullmatch(r"MODP\d+|DH\d+", t)]
            if groups and (dh := dh_group(groups[-1])):
                out[m.group(1)] = dh
    return out


def parse(status: str, xfrm: str, connections: dict[str, str], log: str = "") -> list[Sa]:
    """IKE_SA dicts (VICI's shape) of the established SAs in `whack --status`; `connections`
    maps each libreswan conn (a mapping) to the lab's connection (the tunnel) it belongs to;
    `log` (pluto's) adds each IPsec SA's PFS group."""
    conns = _conns(status)
    packets = _packets(xfrm)
    in_udp = _encapsulated(xfrm)
    pfs = child_groups(log)
    ikes: dict[str, Sa] = {}
    children: dict[str, tuple[str, Sa]] = {}  # IPsec SA serial -> (its IKE SA's, the SA)
    for raw in status.splitlines():
        line = raw.removeprefix("000 ").strip()
        if m := _SPIS.match(line):
            serial, conn = m.group(1), m.group(2)
            c = conns.get(conn, _Conn())
            if serial in children:
                sa = children[serial][1]
                for spi, dst in _SPI.findall(m.group(3)):
                    key = "spi-in" if dst == c.local_host else "spi-out"
                    sa[key] = spi
                    sa[key.replace("spi", "packets")] = str(packets.get(_spi_key(spi), 0))
                    if _spi_key(spi) in in_udp:
                        sa["encap"] = "yes"
            continue
        m = _STATE.match(line)
        if not m:
            continue
        serial, conn, port, state, rest = m.group(1), m.group(2), m.group(3), m.group(4), m.group(6)
        c = conns.get(conn, _Conn())
        if state in IKE_ESTABLISHED:
            algs = c.lines.get("IKE newest", "")
            ikes[serial] = {
                "name": connections.get(conn, conn), "uniqueid": serial, "state": "ESTABLISHED",
                "version": "2" if state.startswith("STATE_V2") else "1",
                "local-host": c.local_host, "remote-host": c.remote_host,
                "local-port": port or "500", "remote-port": port or "500",
                "local-id": c.lines.get("our id"), "remote-id": c.lines.get("their id"),
                **ike_algorithms(algs), "child-sas": {}, "pluto-state": state,
            }
        elif state in CHILD_INSTALLED:
            parent = _PARENT.search(rest)
            child: Sa = {"name": conn, "uniqueid": serial, "state": "INSTALLED",
                         "mode": "TUNNEL", "protocol": "ESP",
                         "local-ts": [c.local_ts] if c.local_ts else [],
                         "remote-ts": [c.remote_ts] if c.remote_ts else [],
                         **esp_algorithms(c.lines.get("ESP newest", "")),
                         "packets-in": "0", "packets-out": "0", "pluto-state": state}
            if serial in pfs:
                child["dh-group"] = pfs[serial]
            elif state.startswith("STATE_QUICK") and "+PFS" in f"+{c.lines.get('policy', '')}" \
                    and "pfsgroup=<Phase1>" in c.lines.get("ESP newest", ""):
                child["dh-group"] = "<Phase1>"  # IKEv1 PFS in the ISAKMP SA's group: set below
            children[serial] = (parent.group(1) if parent else "", child)
    for owner, sa in children.values():
        if sa.get("dh-group") == "<Phase1>":
            group = ikes.get(owner, {}).get("dh-group")
            if group:
                sa["dh-group"] = group
            else:
                del sa["dh-group"]
        if owner in ikes:
            ikes[owner]["child-sas"][f"{sa['name']}-{sa['uniqueid']}"] = sa
    for ike in ikes.values():
        # NAT traversal in use (VICI's nat-any): IKE on 4500 and ESP in UDP. pluto's status does
        # not say which end is behind the NAT (VICI's nat-local / nat-remote)
        if ike["remote-port"] == "4500" and any(ch.get("encap") == "yes"
                                                for ch in ike["child-sas"].values()):
            ike["nat-any"] = "yes"
    return [ikes[k] for k in sorted(ikes, key=int)]
