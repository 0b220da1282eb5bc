"""The lab plan: nodes, links, addresses and per-gateway strongSwan settings, derived from a spec.

Everything a backend or a template needs is decided here, once, as plain data: backends only
materialise it and templates only print it. Address choices are deterministic so that two runs
of one spec give the same lab.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from lab import catalogue as cat
from lab.dataplane import Dataplane
from lab.dpd import DpdSchedule, dpd_schedule, retransmit_for
from lab.errors import LabError
from lab.spec import Cidr, IkeOptions, IpsecOptions, LabSpec, Tunnel
from lab.spec.model import BehindNat
from lab.spec.rules import unsupported

Role = Literal["vpc-host", "vpn-gateway", "internet", "customer-gateway", "idc-host", "switch",
               "nat-router"]
LAB_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
WAN, LAN = "eth0", "eth1"
NAT_INSIDE = "eth1"  # a NAT router's port toward the customer gateway behind it
LIBIPSEC_TUN = "ipsec0"  # kernel-libipsec's TUN device
UNROUTED_BASE = "172.31"  # IDC canary addresses no route of the cloud gateway leads to
MAX_TUNNELS = 32  # a customer gateway (namespace or container, and a daemon) per tunnel
DEFAULT_MTU = 1500  # Ethernet's, the kernel's default for a veth
SCALED_MARGIN = 3  # s between a time-scaled SA's rekey and its hard end, at least (`_margins`)


@dataclass
class Interface:
    name: str
    addresses: list[ipaddress.IPv4Interface] = field(default_factory=list)
    mtu: int | None = None  # None: the kernel's default (1500)
    # an XFRM interface (no cable): what a route-based tunnel's traffic is routed over; only
    # the SAs and policies of this interface ID see it (lab.netlink.configure_node creates it)
    if_id: int | None = None


@dataclass
class Route:
    destination: Cidr
    via: ipaddress.IPv4Address | None = None
    device: str | None = None


@dataclass(frozen=True)
class SourceNat:
    """What a NAT router does: addresses from `inside` leave its WAN as `public`."""

    inside: ipaddress.IPv4Network
    public: ipaddress.IPv4Address
    private: ipaddress.IPv4Address  # the gateway behind it
    inbound: bool = True  # IKE and ESP-in-UDP from the internet forwarded to `private` (1:1)
    udp_timeout: int | None = None  # seconds an idle UDP mapping lives (None: the kernel's)


@dataclass
class Node:
    name: str
    role: Role
    interfaces: list[Interface] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    forwarding: bool = False
    bridge: str | None = None  # the internet node holds the segment's bridge
    # an IDC host: its ranges come from idc_cidrs (else only from the SPD peers); errors name it
    lan_from_idc_cidrs: bool = True
    nat: SourceNat | None = None  # a NAT router's translation (configs/templates/nat.nft.j2)

    def iface(self, name: str) -> Interface:
        return next(i for i in self.interfaces if i.name == name)


@dataclass
class Link:
    """A point-to-point cable; `b_node` is the internet node when `b_iface` joins its bridge."""

    a_node: str
    a_iface: str
    b_node: str
    b_iface: str


@dataclass
class Child:
    name: str
    local_ts: Cidr
    remote_ts: Cidr
    if_id: int | None = None  # route-based: its policies and SAs belong to that XFRM interface


@dataclass
class Connection:
    """One side of one tunnel, as the swanctl template needs it."""

    name: str
    tunnel: str
    version: int
    aggressive: bool
    local_addr: ipaddress.IPv4Address
    remote_addr: ipaddress.IPv4Address
    local_id: str
    remote_id: str
    ike_proposal: str
    esp_proposal: str
    ike_rekey_time: int
    ike_over_time: int
    child_life_time: int
    child_rekey_time: int
    child_life_bytes: int
    child_rekey_bytes: int
    dpd: DpdSchedule | None
    dpd_action: str
    start_action: str
    children: list[Child]
    psk: str
    # the spread strongSwan draws a renegotiation's start from; None: its default (over_time for
    # an IKE_SA, life_time - rekey_time for a CHILD_SA). Set only where a time scale widened the
    # margin (see `_margins`), so that the widened margin does not also spread the start, and
    # where the cloud's rekey fuzz sets the CHILD_SA's spread.
    ike_rand_time: int | None = None
    child_rand_time: int | None = None
    # the CHILD_SAs' inbound anti-replay window in packets (a cloud setting such as AWS's
    # ReplayWindowSize); None: strongSwan's own, not written
    replay_window: int | None = None


def _margins(life: int, time_scale: float, margin: int | None = None,
             fuzz: int | None = None) -> tuple[int, int, int | None]:
    """(rekey time, hard-lifetime margin, start spread) of an SA of `life` seconds.

    strongSwan renegotiates at 90% of the lifetime. When `time_scale` shrinks a 60 s IKE_SA to
    6 s the remaining tenth is 1 s, less than an IKEv1 Main Mode takes on a loaded emulated
    guest, and a late reauthentication takes the SA's CHILD_SAs down at the hard lifetime (seen
    in the VM harness). The margin then keeps SCALED_MARGIN seconds: the rekey starts when it
    would have, the hard end moves out, and the report states the longer lifetime.

    A cloud's own rekey timing (AWS's RekeyMarginTimeSeconds and RekeyFuzzPercentage, as
    ipsec.conf's margintime and rekeyfuzz) replaces the tenth: `margin` seconds (already scaled)
    before the end, the start spread over `fuzz` percent of it (None: strongSwan's own spread,
    the whole margin, which is AWS's 100 %). A time scale keeps SCALED_MARGIN to the hard end
    here too, without widening the spread.
    """
    own = life - life * 9 // 10 if margin is None else min(margin, life - 1)
    rekey = life - own
    spread = None if fuzz is None else own * fuzz // 100
    if time_scale >= 1 or own >= SCALED_MARGIN:
        return rekey, own, spread
    return rekey, SCALED_MARGIN, own if spread is None else spread


@dataclass
class Gateway:
    node: str
    side: Literal["cloud", "customer"]
    public_ip: ipaddress.IPv4Address
    connections: list[Connection]
    dataplane: Dataplane
    aggressive_psk: bool
    retransmit: tuple[float, float, int] | None  # timeout, base, tries (from IKEv2 DPD, or time-scaled)
    # the gateway's route table in the main table (SPD mappings' peers and destination routes),
    # installed once its daemon runs (libipsec only: see lab.routing)
    route_table: list[Route] = field(default_factory=list)
    keep_alive: int | None = None  # NAT-T keepalive interval, s (None: strongSwan's 20 s)
    implementation: Literal["strongswan", "libreswan"] = "strongswan"  # its IKE daemon
    # IKEv1 accepted: a daemon-wide setting for libreswan 4.10 (config setup ikev1-policy), which
    # drops IKEv1 by default and reads it only at start-up
    ikev1: bool = False

    @property
    def pluto(self) -> bool:
        """libreswan's pluto runs here (controlled with whack), not charon (VICI)."""
        return self.implementation == "libreswan"


@dataclass
class MappingProbe:
    """Where the data-plane check sends from and to, for one mapping of one tunnel.

    `delivered=False` marks an unrouted destination: traffic there must not arrive at all.
    """

    tunnel: str
    child: str | None
    vpc_node: str
    vpc_addr: ipaddress.IPv4Address
    idc_node: str
    idc_addr: ipaddress.IPv4Address
    delivered: bool = True
    standby: bool = False  # the hosts' routes point elsewhere until a failover
    # which ways are probed: a route-based tunnel's unrouted destination only towards it (its
    # 0.0.0.0/0 SA takes any source from the IDC side, as such a tunnel does; the routes
    # decide, and there is none back)
    directions: tuple[str, ...] = ("idc->vpc", "vpc->idc")


@dataclass
class LabPlan:
    name: str
    dataplane: Dataplane
    nodes: list[Node]
    links: list[Link]
    gateways: list[Gateway]
    probes: list[MappingProbe]
    internet_node: str = "inet"
    time_scale: float = 1.0

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def gateway(self, node: str) -> Gateway:
        return next(g for g in self.gateways if g.node == node)

    @property
    def cloud_gateways(self) -> list[Gateway]:
        return [g for g in self.gateways if g.side == "cloud"]

    def cloud_of(self, tunnel: str) -> Gateway:
        """The cloud gateway (primary or secondary) that terminates a tunnel."""
        return next(g for g in self.cloud_gateways if any(c.tunnel == tunnel for c in g.connections))

    def customer_of(self, tunnel: str) -> Gateway:
        return next(g for g in self.gateways
                    if g.side == "customer" and any(c.tunnel == tunnel for c in g.connections))

    def connection(self, tunnel: str) -> Connection:
        """A tunnel's cloud-side connection."""
        return next(c for c in self.cloud_of(tunnel).connections if c.tunnel == tunnel)

    def local_ids(self) -> set[str]:
        """The IDs the gateways are configured to identify by (what a diagnosis of an ID
        mismatch compares the logs' IDs with)."""
        return {c.local_id for g in self.gateways for c in g.connections}


def check_lab_name(name: str) -> str:
    if not LAB_NAME.match(name):
        raise LabError(
            f"--name: {name!r} must be 1-16 characters of a-z, 0-9 and '-', starting with a "
            "letter or digit (it prefixes namespaces and containers)"
        )
    return name


def host_address(cidr: Cidr, index: int) -> ipaddress.IPv4Address:
    """The `index`-th host of a range, or its last address when the range is too small."""
    if cidr.num_addresses <= 2:
        return cidr.network_address if cidr.prefixlen == 32 else cidr[-1]
    return cidr[min(index, cidr.num_addresses - 2)]


def proposal(encryption: str, integrity: str, dh: str | None, ike: bool = False) -> str:
    """An AEAD cipher (GCM) takes no integrity algorithm; in IKE it takes the integrity's PRF."""
    enc = cat.by_console(cat.ENCRYPTION, encryption)
    parts = [
        enc.keyword,
        cat.by_console(cat.INTEGRITY, integrity).keyword if not enc.aead
        else cat.PRF[integrity][0] if ike else None,
    ]
    if dh:
        parts.append(cat.by_console(cat.DH_GROUPS, dh).keyword)
    return "-".join(p for p in parts if p)


def customer_options(tunnel: Tunnel) -> tuple[IkeOptions, IpsecOptions, str]:
    """The customer side's settings: a mirror of the cloud side, plus any deliberate overrides."""
    ike = IkeOptions.model_validate({**tunnel.ike.model_dump(), **tunnel.customer.ike})
    ipsec = IpsecOptions.model_validate({**tunnel.ipsec.model_dump(), **tunnel.customer.ipsec})
    psk = tunnel.customer.pre_shared_key or tunnel.pre_shared_key
    return ike, ipsec, psk.get_secret_value()


def _identity(ident, public_ip) -> str:
    return ident.value if ident.value else str(public_ip)


def child_name(tunnel: Tunnel, index: int) -> str:
    """`-m<i>` per SPD mapping, `-r<i>` per routed destination."""
    kind = "r" if tunnel.communication_mode == "destination-route" else "m"
    return f"{tunnel.name}-{kind}{index + 1}"


def _connection(
    tunnel: Tunnel, side: str, ike: IkeOptions, ipsec: IpsecOptions, psk: str,
    local_addr, remote_addr, local_id: str, remote_id: str, dataplane: Dataplane,
    time_scale: float = 1.0, selectors: list[tuple[Cidr, Cidr]] | None = None,
) -> Connection:
    pfs = None if ipsec.pfs == "disable" else ipsec.pfs
    pairs = tunnel.mappings() if selectors is None else selectors
    children = [
        Child(child_name(tunnel, i), lo if side == "cloud" else pe, pe if side == "cloud" else lo)
        for i, (lo, pe) in enumerate(pairs)
    ]
    passive = tunnel.negotiation_type == "passive"
    if side == "cloud":
        start = {"active": "start", "passive": "none"}.get(tunnel.negotiation_type, "trap")
        if start == "trap" and not dataplane.trap_policies:
            start = "none"  # the lab's traffic trigger initiates instead (see lab.trigger)
    else:  # the customer gateway initiates only when the cloud side never does
        start = "start" if passive else "none"
    def scaled(seconds: int) -> int:
        return max(2, round(seconds * time_scale))

    dpd = dpd_schedule(scaled(tunnel.dpd.timeout), ike.version) if tunnel.dpd.enabled else None
    life_bytes = max(65536, round(ipsec.sa_lifetime_kb * 1024 * time_scale))
    ike_life, child_life = scaled(ike.sa_lifetime), scaled(ipsec.sa_lifetime)
    ike_rekey, ike_over, ike_rand = _margins(ike_life, time_scale)
    # the cloud's own CHILD_SA rekey timing and replay window, on the cloud side only (the
    # customer's options mirror the cloud's, but these time the cloud gateway's rekeys)
    cloud_ipsec = tunnel.ipsec if side == "cloud" else None
    margin = None if cloud_ipsec is None or cloud_ipsec.rekey_margin is None else \
        max(1, round(cloud_ipsec.rekey_margin * time_scale))
    child_rekey, child_margin, child_rand = _margins(
        child_life, time_scale, margin, None if cloud_ipsec is None else cloud_ipsec.rekey_fuzz)
    # IKEv1 has no IKE_SA rekey, only reauthentication: when both ends reauthenticate at
    # the same lifetime strongSwan keeps both new IKE_SAs and they double every round, so the
    # customer side leaves it to the cloud side (rekey_time 0: no reauthentication of its own)
    v1_customer = side == "customer" and ike.version == "v1"
    return Connection(
        name=tunnel.name,
        tunnel=tunnel.name,
        version=1 if ike.version == "v1" else 2,
        aggressive=ike.version == "v1" and ike.exchange_mode == "aggressive",
        local_addr=local_addr,
        remote_addr=remote_addr,
        local_id=local_id,
        remote_id=remote_id,
        ike_proposal=proposal(ike.encryption, ike.integrity, ike.dh_group, ike=True),
        esp_proposal=proposal(ipsec.encryption, ipsec.integrity, pfs),
        ike_rekey_time=0 if v1_customer else ike_rekey,
        ike_over_time=ike_life - ike_life * 9 // 10 if v1_customer else ike_over,
        child_life_time=child_rekey + child_margin,
        child_rekey_time=child_rekey,
        child_life_bytes=life_bytes,
        child_rekey_bytes=life_bytes * 9 // 10,
        dpd=dpd,
        dpd_action=cat.ALL_DPD_ACTIONS[tunnel.dpd.action] if dpd else "none",
        start_action=start,
        children=children,
        psk=psk,
        ike_rand_time=None if v1_customer else ike_rand,
        child_rand_time=child_rand,
        replay_window=None if cloud_ipsec is None else cloud_ipsec.replay_window,
    )


class _Addresses:
    """Hands out the private side's addresses: gateway .1, hosts .10, per distinct range."""

    def __init__(self, base: list[Cidr]):
        self.lans: list[Cidr] = list(base)

    def lan_for(self, cidr: Cidr) -> Cidr:
        for lan in self.lans:
            if cidr.subnet_of(lan):
                return lan
        self.lans.append(cidr)
        return cidr

    def gateway_ifaces(self, selectors: list[Cidr], index: int = 1) -> list[ipaddress.IPv4Interface]:
        """The gateway's .1 (.index) in every range, and in every traffic selector it protects.

        kernel-libipsec routes a CHILD_SA over its TUN device with a source address inside
        the local traffic selector, so the gateway must own one there.
        """
        out: list[ipaddress.IPv4Interface] = []
        for cidr in [*self.lans, *selectors]:
            if cidr.num_addresses > 2:
                iface = ipaddress.IPv4Interface(f"{host_address(cidr, index)}/{cidr.prefixlen}")
                if all(iface.ip != o.ip for o in out):
                    out.append(iface)
        return out


@dataclass(frozen=True)
class DaemonTuning:
    """Daemon-wide settings fixed by the caller instead of derived from the tunnels.

    The matrix keeps daemons up across cases with different settings, so it fixes them once:
    aggressive-mode PSK accepted, and a short retransmit schedule so an unanswered case ends
    quickly (timeout, base, tries).
    """

    aggressive_psk: bool = True
    retransmit: tuple[float, float, int] | None = (1.0, 1.4, 2)
    ikev1: bool = True  # IKEv1 accepted whatever the first tunnel's version (libreswan drops it)


def nat_router_address(private_ip: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    """The NAT router's inside address: the first of the gateway's /24, or the last when the
    gateway itself has the first (a router-style `left=192.168.0.1`)."""
    inside = ipaddress.IPv4Network(f"{private_ip}/24", strict=False)
    first = inside.network_address + 1
    return first if private_ip != first else inside.broadcast_address - 1


@dataclass(frozen=True)
class CustomerPlacement:
    """How the first customer gateway runs when it is not the lab's own: the user's config may
    put it at another address than the spec's (the cloud still expects the spec's), and the
    user's strongswan.conf, not the lab, decides its daemon-wide settings."""

    address: ipaddress.IPv4Address | None = None  # its WAN address, when not the spec's
    own_daemon_settings: bool = False  # no aggressive-PSK or retransmit setting of the lab's
    # A user's config with real addresses, run as written (lab.customer.own): they replace the
    # spec's documentation addresses on both ends, inside the lab's own namespaces only.
    customer_ip: ipaddress.IPv4Address | None = None  # public: the gateway (or its NAT) there
    private_ip: ipaddress.IPv4Address | None = None  # private WAN: behind the lab's NAT router
    cloud_ip: ipaddress.IPv4Address | None = None  # the cloud gateway the config names
    tunnel: int = 0  # which tunnel's addresses they are (a lab: the first; `advise --tunnel`)
    # a default route on the gateway's WAN, as a real gateway has one: libreswan resolves
    # left=%defaultroute (and leftnexthop=) from it, and finds no address without one
    default_route: bool = False

    def as_placed(self, spec: LabSpec) -> LabSpec:
        """`spec` with the first tunnel's addresses where the user's config puts them. Not
        validated against the spec rules (they keep hand-written specs to documentation
        ranges): the config's own addresses are what the lab was asked to run."""
        if self.customer_ip is None and self.private_ip is None and self.cloud_ip is None:
            return spec
        t = spec.tunnels[self.tunnel]
        gw = spec.vpn_gateway
        if self.cloud_ip is not None:
            key = "public_ip" if t.vpn_gateway == "primary" else "secondary_public_ip"
            gw = gw.model_copy(update={key: self.cloud_ip})
        cg = t.customer_gateway
        if self.customer_ip is not None:
            cg = cg.model_copy(update={"public_ip": self.customer_ip})
        if self.private_ip is not None:
            nat = cg.behind_nat.model_copy(update={"private_ip": self.private_ip}) \
                if cg.behind_nat is not None else BehindNat(private_ip=self.private_ip)
            cg = cg.model_copy(update={"behind_nat": nat})
        tunnels = list(spec.tunnels)
        tunnels[self.tunnel] = t.model_copy(update={"customer_gateway": cg})
        return spec.model_copy(update={"vpn_gateway": gw, "tunnels": tunnels})


def build_plan(spec: LabSpec, name: str, dataplane: Dataplane,
               tuning: DaemonTuning | None = None, time_scale: float = 1.0,
               placement: CustomerPlacement | None = None) -> LabPlan:
    """Derive the whole lab from a valid spec; refuses what the endpoints cannot run.

    `time_scale` shortens DPD timeouts and SA lifetimes for quick experiments (the spec keeps
    the cloud's real values; reports state the scale). `placement` applies to the first
    tunnel's customer gateway (a user's own config is for exactly one tunnel).
    """
    placement = placement or CustomerPlacement()
    spec = placement.as_placed(spec)
    if not 0 < time_scale <= 1:
        raise LabError(f"--time-scale: must be > 0 and <= 1 (got {time_scale})")
    check_lab_name(name)
    if len(spec.tunnels) > MAX_TUNNELS:
        raise LabError(f"tunnels: {len(spec.tunnels)} tunnels; a lab runs at most {MAX_TUNNELS} "
                       "(one customer gateway each, with its own node and daemon): split the "
                       "spec into several labs")
    missing = unsupported(spec)
    if missing:
        raise LabError("cannot run this lab:\n" + "\n".join(f"  - {m}" for m in missing))
    for i, t in enumerate(spec.tunnels):
        if t.communication_mode == "destination-route" and not spec.routes_of(t):
            raise LabError(f"tunnels[{i}]: destination-route tunnel {t.name!r} has no route in "
                           "vpn_gateway.routes, so it would carry nothing; add {destination, "
                           "tunnel} entries (valid for the cloud, where routes come later)")
    for i, t in enumerate(spec.tunnels):
        if t.vpn_gateway == "secondary" and t.negotiation_type == "traffic-triggered" \
                and not dataplane.trap_policies:
            raise LabError(f"tunnels[{i}].negotiation_type: the lab's traffic trigger watches the "
                           "primary VPN gateway only; use active or passive on the secondary")
    gw_spec = spec.vpn_gateway
    nodes: list[Node] = []
    links: list[Link] = []
    probes: list[MappingProbe] = []

    internet = Node("inet", "internet", bridge="br0")
    # the internet path's MTU, on both ends of every uplink: the gateways know it (PMTU discovery
    # works), unlike a smaller link they do not know of (lab.scenarios.impair.bridge_port_mtu)
    mtu = spec.internet.mtu if spec.internet.mtu != DEFAULT_MTU else None
    vpc = Node("vpc", "vpc-host")
    used = ["primary"] + (["secondary"] if any(t.vpn_gateway == "secondary" for t in spec.tunnels)
                          else [])
    clouds = {which: Node("vpngw" if which == "primary" else "vpngw2", "vpn-gateway", forwarding=True)
              for which in used}
    nodes += [vpc, *clouds.values(), internet]

    public_ips = [gw_spec.ip_of(w) for w in used] + [t.customer_gateway.public_ip for t in spec.tunnels]
    if placement.address is not None and placement.address not in public_ips:
        public_ips.append(placement.address)

    def wan(node: Node, ip: ipaddress.IPv4Address, port: str) -> None:
        node.interfaces.append(Interface(WAN, [ipaddress.IPv4Interface(f"{ip}/32")], mtu=mtu))
        node.routes += [Route(Cidr(f"{o}/32"), device=WAN) for o in public_ips if o != ip]
        internet.interfaces.append(Interface(port, mtu=mtu))
        links.append(Link(node.name, WAN, internet.name, port))

    for which, node in clouds.items():
        wan(node, gw_spec.ip_of(which), f"p-{node.name}")

    vpc_lans = _Addresses([gw_spec.vpc_cidr])
    vpc_addr: dict[Cidr, ipaddress.IPv4Address] = {}
    for t in spec.tunnels:
        for local, _ in spec.selectors(t):
            vpc_lans.lan_for(local)
            vpc_addr.setdefault(local, host_address(local, 10))

    cloud_conns: dict[str, list[Connection]] = {which: [] for which in used}
    gateways: list[Gateway] = []
    route_tables: dict[str, list[Route]] = {which: [] for which in used}
    sites: dict[str, _Site] = {}
    hc_addrs: dict[str, list[ipaddress.IPv4Interface]] = {}
    for i, t in enumerate(spec.tunnels, start=1):
        cgw_ip = t.customer_gateway.public_ip
        cloud_ip = gw_spec.ip_of(t.vpn_gateway)
        cloud = clouds[t.vpn_gateway]
        cgw = Node(f"cgw{i}", "customer-gateway", forwarding=True)
        site = sites.setdefault(t.customer_gateway.site or f"#{i}",
                                _Site(Node(f"idc{i}", "idc-host",
                                           lan_from_idc_cidrs=bool(t.customer_gateway.idc_cidrs)),
                                      _Addresses([])))
        site.gateways.append(cgw)
        nodes.append(cgw)
        if len(site.gateways) == 1:
            nodes.append(site.host)
        # where the gateway really is: the spec's address, or the user's config's (first tunnel)
        cgw_addr = placement.address if i == 1 and placement.address is not None else cgw_ip
        own_settings = i == 1 and placement.own_daemon_settings
        nat = t.customer_gateway.behind_nat
        local_addr = cgw_addr
        if nat is None:
            wan(cgw, cgw_addr, f"p-cgw{i}")
        else:  # the gateway's WAN is private; its NAT router holds the public address
            router = Node(f"nat{i}", "nat-router", forwarding=True)
            inside = ipaddress.IPv4Network(f"{nat.private_ip}/24", strict=False)
            router_ip = nat_router_address(nat.private_ip)
            router.nat = SourceNat(inside, cgw_addr, nat.private_ip, nat.inbound, nat.udp_timeout)
            nodes.append(router)
            wan(router, cgw_addr, f"p-cgw{i}")
            router.interfaces.append(Interface(NAT_INSIDE, [ipaddress.IPv4Interface(f"{router_ip}/24")],
                                               mtu=mtu))
            cgw.interfaces.append(Interface(WAN, [ipaddress.IPv4Interface(f"{nat.private_ip}/24")],
                                            mtu=mtu))
            cgw.routes += [Route(Cidr(f"{o}/32"), via=router_ip) for o in public_ips if o != cgw_addr]
            links.append(Link(router.name, NAT_INSIDE, cgw.name, WAN))
            local_addr = nat.private_ip
        if i == 1 and placement.default_route:
            # behind NAT its router; on the simulated internet (a bridge, no router) the cloud
            # gateway's on-link address stands for the ISP's next hop. Nothing leaves by it in
            # clear: the gateway's firewall drops what would leave its WAN unencrypted
            cgw.routes.append(Route(Cidr("0.0.0.0/0"), via=cloud_ip if nat is None else
                                    nat_router_address(nat.private_ip)))

        selectors = spec.selectors(t)
        customer_routes: list[Route] = []
        for cidr in t.customer_gateway.idc_cidrs:
            site.lans.lan_for(cidr)
        for _, peer in selectors:
            site.lans.lan_for(peer)
            site.addr.setdefault(peer, host_address(peer, 10))
        canary = None
        if t.communication_mode == "destination-route":
            # an IDC address no route leads to (an unrouted IDC range, else a made-up one):
            # traffic to it must not cross any tunnel
            routed = spec.routes_of(t)
            unrouted = [c for c in t.customer_gateway.idc_cidrs
                        if not any(c.overlaps(r) for r in routed)]
            dark = unrouted[0] if unrouted else Cidr(f"{UNROUTED_BASE}.{i}.0/24")
            canary = host_address(site.lans.lan_for(dark), 10)

        cloud_id = _identity(t.ike.local_id, cloud_ip)
        peer_id = _identity(t.ike.peer_id, cgw_ip)
        cloud_conn = _connection(
            t, "cloud", t.ike, t.ipsec, t.pre_shared_key.get_secret_value(),
            cloud_ip, cgw_ip, cloud_id, peer_id, dataplane, time_scale, selectors,
        )
        cloud_conns[t.vpn_gateway].append(cloud_conn)
        c_ike, c_ipsec, c_psk = customer_options(t)
        # ID overrides are the customer's view: its own ID, and the ID it expects of the cloud.
        c_local = _identity(c_ike.local_id, cgw_ip) if "local_id" in t.customer.ike else peer_id
        c_remote = (_identity(c_ike.peer_id, cloud_ip) if "peer_id" in t.customer.ike
                    else cloud_id)
        customer_conn = _connection(
            t, "customer", c_ike, c_ipsec, c_psk, local_addr, cloud_ip,
            c_local, c_remote, dataplane, time_scale,
            [(p, lo) for lo, p in selectors] if t.customer.swap_selectors else selectors,
        )
        route_based = t.communication_mode == "destination-route" and dataplane.xfrm_interfaces
        if route_based:
            _route_based(i, t, cloud, cloud_conn, route_tables[t.vpn_gateway], selectors,
                         None if own_settings else (cgw, customer_conn, customer_routes))
        hc = t.health_check
        if hc.enabled and hc.local_ip and hc.peer_ip:
            # the NQA probes cross the tunnel: their own CHILD_SA, addresses on both gateways
            local, peer = Cidr(f"{hc.local_ip}/32"), Cidr(f"{hc.peer_ip}/32")
            cloud_conn.children.append(Child(f"{t.name}-hc", local, peer))
            customer_conn.children.append(Child(f"{t.name}-hc", peer, local))
            hc_addrs.setdefault(cloud.name, []).append(ipaddress.IPv4Interface(f"{hc.local_ip}/32"))
            hc_addrs.setdefault(cgw.name, []).append(ipaddress.IPv4Interface(f"{hc.peer_ip}/32"))
        gateways.append(Gateway(
            cgw.name, "customer", cgw_addr, [customer_conn], dataplane,
            route_table=customer_routes,
            aggressive_psk=False if own_settings else customer_conn.aggressive if tuning is None
            else tuning.aggressive_psk,
            retransmit=None if own_settings else retransmit_for(
                [customer_conn.dpd] if customer_conn.version == 2 else [], time_scale)
            if tuning is None else tuning.retransmit,
            keep_alive=nat.keepalive if nat is not None else None,
            implementation=t.customer_gateway.implementation,
            ikev1=customer_conn.version == 1 if tuning is None else tuning.ikev1,
        ))
        # the hosts' routes point at the primary gateway and a site's first customer gateway:
        # tunnels elsewhere are standby paths until a failover moves the routes
        standby = t.vpn_gateway != "primary" or site.gateways[0] is not cgw
        for m, (local, peer) in enumerate(selectors):
            probes.append(MappingProbe(
                t.name, child_name(t, 0 if route_based else m), vpc.name, vpc_addr[local],
                site.host.name, site.addr[peer], standby=standby,
            ))
            table = route_tables[t.vpn_gateway]
            if dataplane.name == "libipsec" and all(r.destination != peer for r in table):
                table.append(Route(peer, device=LIBIPSEC_TUN))
        if canary is not None:
            probes.append(MappingProbe(t.name, None, vpc.name, host_address(gw_spec.vpc_cidr, 10),
                                       site.host.name, canary, delivered=False, standby=standby,
                                       directions=("vpc->idc",) if route_based else
                                       ("idc->vpc", "vpc->idc")))

    _attach(list(clouds.values()), vpc, vpc_lans, vpc_addr, links, nodes, "vpcsw")
    for site in sites.values():
        _attach(site.gateways, site.host, site.lans, site.addr, links, nodes,
                f"idcsw{site.host.name[3:]}")
    for node_name, addrs in hc_addrs.items():
        next(n for n in nodes if n.name == node_name).iface(LAN).addresses.extend(addrs)
    for which, node in reversed(list(clouds.items())):
        conns = cloud_conns[which]
        gateways.insert(0, Gateway(
            node.name, "cloud", gw_spec.ip_of(which), conns, dataplane,
            route_table=route_tables[which],
            aggressive_psk=any(c.aggressive for c in conns) if tuning is None
            else tuning.aggressive_psk,
            retransmit=retransmit_for([c.dpd for c in conns if c.version == 2], time_scale)
            if tuning is None else tuning.retransmit,
        ))
    return LabPlan(name, dataplane, nodes, links, gateways, probes, time_scale=time_scale)


ANY = Cidr("0.0.0.0/0")


def _route_based(index: int, t: Tunnel, cloud: Node, cloud_conn: Connection,
                 cloud_routes: list[Route], selectors: list[tuple[Cidr, Cidr]],
                 customer: tuple[Node, Connection, list[Route]] | None) -> None:
    """A destination-route tunnel as the cloud negotiates it: one CHILD_SA 0.0.0.0/0 ===
    0.0.0.0/0 bound to an XFRM interface of its own (interface ID = the tunnel's number), and
    the routed destinations over that interface, so routes alone decide what the tunnel
    carries. The lab's customer gateway mirrors it (route-based, the VPC routed over its own
    XFRM interface); a user's own config is left as written (`customer` None)."""
    xfrm = f"xfrm{index}"
    cloud_conn.children = [Child(child_name(t, 0), ANY, ANY, if_id=index)]
    cloud.interfaces.append(Interface(xfrm, if_id=index))
    cloud_routes += [Route(peer, device=xfrm) for _, peer in selectors
                     if all(r.destination != peer for r in cloud_routes)]
    if customer is None:
        return
    node, conn, routes = customer
    conn.children = [Child(child_name(t, 0), ANY, ANY, if_id=index)]
    node.interfaces.append(Interface(xfrm, if_id=index))
    routes += [Route(local, device=xfrm) for local in dict.fromkeys(lo for lo, _ in selectors)]


@dataclass
class _Site:
    """An IDC: one host, the customer gateways in front of it, its address ranges."""

    host: Node
    lans: _Addresses
    gateways: list[Node] = field(default_factory=list)
    addr: dict[Cidr, ipaddress.IPv4Address] = field(default_factory=dict)


def _attach(
    gws: list[Node], host: Node, lans: _Addresses, probe_addr: dict[Cidr, ipaddress.IPv4Address],
    links: list[Link], nodes: list[Node], switch_name: str,
) -> None:
    """One gateway: a LAN cable to the host. Several: a switch, gateway k taking the k-th address
    of every range, the host's default route via the first."""
    if len(gws) == 1:
        _attach_host(gws[0], host, lans, probe_addr, links)
        return
    switch = Node(switch_name, "switch", bridge="br0")
    nodes.append(switch)
    for k, gw in enumerate(gws, start=1):
        gw.interfaces.append(Interface(LAN, lans.gateway_ifaces(list(probe_addr), index=k)))
        switch.interfaces.append(Interface(f"p-{gw.name}"))
        links.append(Link(gw.name, LAN, switch.name, f"p-{gw.name}"))
    _host_side(gws[0], host, lans, probe_addr)
    switch.interfaces.append(Interface("p-host"))
    links.append(Link(host.name, "eth0", switch.name, "p-host"))


def _attach_host(
    gw: Node, host: Node, lans: _Addresses, probe_addr: dict[Cidr, ipaddress.IPv4Address],
    links: list[Link],
) -> None:
    """Cable a host behind a gateway: one LAN link carrying every range of that side."""
    gw.interfaces.append(Interface(LAN, lans.gateway_ifaces(list(probe_addr))))
    _host_side(gw, host, lans, probe_addr)
    links.append(Link(gw.name, LAN, host.name, "eth0"))


def _host_side(gw: Node, host: Node, lans: _Addresses,
               probe_addr: dict[Cidr, ipaddress.IPv4Address]) -> None:
    """The host's addresses (one per range and per probed selector) and its default route."""
    gw_ifaces = gw.iface(LAN).addresses
    host_ifaces: list[ipaddress.IPv4Interface] = []
    for lan in lans.lans:
        default = host_address(lan, 10)
        if lan.num_addresses > 2:
            host_ifaces.append(ipaddress.IPv4Interface(f"{default}/{lan.prefixlen}"))
    for cidr, addr in probe_addr.items():
        lan = lans.lan_for(cidr)
        iface = ipaddress.IPv4Interface(f"{addr}/{lan.prefixlen if lan.num_addresses > 2 else 32}")
        if iface not in host_ifaces:
            host_ifaces.append(iface)
        if lan.num_addresses <= 2:
            gw.routes.append(Route(Cidr(f"{addr}/32"), device=LAN))
    host.interfaces.append(Interface("eth0", host_ifaces))
    if gw_ifaces:
        host.routes.append(Route(Cidr("0.0.0.0/0"), via=gw_ifaces[0].ip))
