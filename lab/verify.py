"""The one verifier: pure functions over the dictionaries strongSwan's VICI `list-sas` returns.

They find SAs and say what differs from what was expected; callers (`check`, the user's own
config, the matrix) pick which SAs to judge and how to word the rows. Nothing here talks to a
daemon, so every rule is tested on recorded dictionaries and holds for every caller alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from lab import catalogue as cat

Sa = dict[str, Any]


def find_ike(sas: list[Sa], name: str) -> Sa | None:
    """The newest ESTABLISHED IKE_SA of connection `name`."""
    matches = [sa for sa in sas if sa["name"] == name and sa.get("state") == "ESTABLISHED"]
    return matches[-1] if matches else None


def established_ikes(sas: list[Sa], name: str | None, peer: str) -> list[Sa]:
    """ESTABLISHED IKE_SAs of connection `name`, or (name None: a user's own config, whose names
    are theirs) of any connection with the peer at `peer`; oldest first."""
    out = [s for s in sas if s.get("state") == "ESTABLISHED"
           and (s["name"] == name if name else s.get("remote-host") == peer)]
    return sorted(out, key=lambda s: int(s.get("uniqueid", 0)))


def installed_children(ike: Sa | None) -> dict[str, Sa]:
    """Newest INSTALLED CHILD_SA per name."""
    out: dict[str, Sa] = {}
    children = (ike or {}).get("child-sas", {}).values()
    for child in sorted(children, key=lambda c: int(c.get("uniqueid", 0))):
        if child.get("state") == "INSTALLED":
            out[child["name"]] = child
    return out


def installed(sas: list[Sa], name: str | None = None) -> Iterator[tuple[Sa, Sa]]:
    """(IKE_SA, CHILD_SA) for every INSTALLED CHILD_SA of ESTABLISHED IKE_SAs (of `name`)."""
    for ike in sas:
        if ike.get("state") != "ESTABLISHED" or (name and ike["name"] != name):
            continue
        for child in (ike.get("child-sas") or {}).values():
            if child.get("state") == "INSTALLED":
                yield ike, child


def find_child(ike: Sa | None, local: object, remote: object) -> Sa | None:
    """The newest INSTALLED CHILD_SA of an IKE_SA with exactly these traffic selectors."""
    wanted = ([str(local)], [str(remote)])
    found = [c for c in (ike or {}).get("child-sas", {}).values()
             if c.get("state") == "INSTALLED" and (c.get("local-ts"), c.get("remote-ts")) == wanted]
    return max(found, key=lambda c: int(c.get("uniqueid", 0))) if found else None


def dh_name(group: str) -> str | None:
    """The DH group as list-sas names it; None for a disabled PFS."""
    return None if group == "disable" else cat.by_console(cat.DH_GROUPS, group).sa_name


def algorithm_problems(sa: Sa, encryption: str, integrity: str) -> list[str]:
    """Differences between what list-sas reports and the menu entries expected."""
    wrong = []
    enc = cat.by_console(cat.ENCRYPTION, encryption)
    if sa.get("encr-alg") != enc.sa_name or (
        enc.key_size and sa.get("encr-keysize") != str(enc.key_size)
    ):
        got = f"{sa.get('encr-alg')}/{sa.get('encr-keysize', '-')}"
        wrong.append(f"encryption {got}, expected {encryption}")
    integ = cat.by_console(cat.INTEGRITY, integrity)
    if enc.aead:  # GCM: no integ-alg; an IKE_SA (the only SA with prf-alg) uses the hash as PRF
        if sa.get("integ-alg") is not None:
            wrong.append(f"integrity {sa.get('integ-alg')}, expected none (AEAD {encryption})")
        if "prf-alg" in sa and sa["prf-alg"] != cat.PRF[integrity][1]:
            wrong.append(f"PRF {sa['prf-alg']}, expected {cat.PRF[integrity][1]}")
    elif sa.get("integ-alg") != integ.sa_name:
        wrong.append(f"integrity {sa.get('integ-alg')}, expected {integrity}")
    return wrong


def algorithms(sa: Sa) -> str:
    """What an SA negotiated, in list-sas' own names (an AEAD SA shows no integrity algorithm,
    an IKE_SA its PRF): the success rows print this, never the spec's expectation."""
    enc = sa.get("encr-alg", "?") + (f"-{sa['encr-keysize']}" if sa.get("encr-keysize") else "")
    parts = [enc, *(sa[k] for k in ("integ-alg", "prf-alg", "dh-group") if sa.get(k))]
    return "/".join(parts)


def ike_problems(ike: Sa, encryption: str, integrity: str, dh_group: str,
                 version: int) -> list[str]:
    """An IKE_SA against the expected proposal and IKE version."""
    wrong = algorithm_problems(ike, encryption, integrity)
    if ike.get("dh-group") != dh_name(dh_group):
        wrong.append(f"DH {ike.get('dh-group')}, expected {dh_group}")
    if ike.get("version") != str(version):
        wrong.append(f"IKEv{ike.get('version')}, expected IKEv{version}")
    return wrong


def selector_problem(child: Sa, local: object, remote: object) -> str | None:
    ts = (child.get("local-ts"), child.get("remote-ts"))
    if ts != ([str(local)], [str(remote)]):
        return f"TS {ts[0]} === {ts[1]}, expected {local} === {remote}"
    return None


def pfs_problem(child: Sa, pfs: str) -> str | None:
    """A CHILD_SA's DH group against the PFS setting ("disable": the SA must carry none)."""
    got = child.get("dh-group")
    if got != dh_name(pfs):
        return f"PFS {got or 'none'}, expected {pfs}"
    return None


def ts_network(ts: str) -> ipaddress.IPv4Network | None:
    """The range of a traffic selector as written (`10.0.0.0/24[tcp/80]`); None for `dynamic`."""
    try:
        return ipaddress.IPv4Network(ts.split("[")[0].strip(), strict=False)
    except ValueError:
        return None


def covers(child: Sa, local: ipaddress.IPv4Network, remote: ipaddress.IPv4Network) -> bool:
    """Whether a CHILD_SA's selectors hold these ranges whole (a route-based 0.0.0.0/0 SA holds
    every routed destination)."""
    locals_ = [ts_network(x) for x in child.get("local-ts", [])]
    remotes = [ts_network(x) for x in child.get("remote-ts", [])]
    return any(n and local.subnet_of(n) for n in locals_) and \
        any(n and remote.subnet_of(n) for n in remotes)


def overlaps(child: Sa, local: ipaddress.IPv4Network, remote: ipaddress.IPv4Network) -> bool:
    """Whether a CHILD_SA's selectors overlap these ranges (to name what was installed instead)."""
    locals_ = [ts_network(x) for x in child.get("local-ts", [])]
    remotes = [ts_network(x) for x in child.get("remote-ts", [])]
    return any(n and n.overlaps(local) for n in locals_) and \
        any(n and n.overlaps(remote) for n in remotes)
