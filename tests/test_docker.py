"""The docker backend specifically: containers, networks, labels, host isolation, Compose parity.

The generic integration tests (tests/test_lab.py) run on docker too; these check what only the
docker backend has. Every test removes what it made, also when it fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lab import lifecycle, netlink
from lab import state as labstate
from lab.backends.docker import topology  # a hard dependency: imported, never skipped
from lab.backends.docker.compose import compose_model
from lab.dataplane import Dataplane
from lab.errors import LabError
from lab.plan import build_plan
from lab.spec import parse_spec
from tests.conftest import EXAMPLES, ROOT
from tests.test_spec import spec as spec_dict

COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
LIBIPSEC = Dataplane("libipsec", "test")


def _plan(path: Path | dict, name: str = "dkplan"):
    data = yaml.safe_load(path.read_text()) if isinstance(path, Path) else path
    return build_plan(parse_spec(data), name, LIBIPSEC)


# -- no engine needed ------------------------------------------------------------------------------
def test_segments_for_the_default_lab():
    segs = {s.key: s for s in topology.segments(_plan(EXAMPLES / "default.yaml"))}
    assert set(segs) == {"wan-vpngw", "wan-cgw1", "lan-vpc", "lan-idc1"}
    assert str(segs["wan-vpngw"].subnet) == "203.0.113.0/29"
    assert segs["wan-vpngw"].members["vpngw"] == ("eth0", ipaddress.IPv4Address("203.0.113.1"))
    assert segs["wan-vpngw"].members["inet"][0] == "p-vpngw"
    # Docker's reserved gateway never takes an address the plan uses (the gateway's .1)
    assert segs["lan-vpc"].gateway == ipaddress.IPv4Address("10.0.255.254")
    assert segs["lan-vpc"].members["vpngw"] == ("eth1", ipaddress.IPv4Address("10.0.0.1"))


def test_cloud_and_customer_in_one_uplink_block_is_refused_by_field():
    data = spec_dict()
    data["tunnels"][0]["customer_gateway"]["public_ip"] = "203.0.113.2"
    with pytest.raises(LabError, match=r"vpn_gateway.public_ip 203.0.113.1 and "
                                       r"tunnels\[0\].customer_gateway.public_ip 203.0.113.2"):
        topology.segments(_plan(data))


def test_customer_gateways_may_share_an_uplink_block():
    data = spec_dict(spd_rules=[{"local": ["10.0.1.0/24"], "peer": ["192.168.1.0/24"]}])
    data["tunnels"].append({"name": "t2", "customer_gateway": {"public_ip": "198.51.100.3"},
                            "pre_shared_key": "k2",
                            "spd_rules": [{"local": ["10.0.2.0/24"], "peer": ["192.168.2.0/24"]}]})
    segs = {s.key: s for s in topology.segments(_plan(data))}
    assert set(segs["wan-cgw1"].members) == {"cgw1", "cgw2", "inet"}
    assert "wan-cgw2" not in segs


def _interpolate(text: str, env: dict[str, str]) -> str:
    import re

    return re.sub(r"\$\{(\w+)(?::[-?]([^}]*))?\}",
                  lambda m: env.get(m.group(1), m.group(2) or ""), text)


def test_compose_file_is_the_default_plan():
    compose = yaml.safe_load(_interpolate(COMPOSE_FILE.read_text(), {"COMPOSE_PROJECT_NAME": "x"}))
    assert compose["version"] == "2.4"
    want = compose_model(_plan(EXAMPLES / "default.yaml", "x"))
    got_networks = {
        key: {"subnet": net["ipam"]["config"][0]["subnet"],
              "gateway": net["ipam"]["config"][0]["gateway"]}
        for key, net in compose["networks"].items()
    }
    assert got_networks == want["networks"]
    for key, net in compose["networks"].items():
        assert net["name"] == f"ilab-x-{key}"
        assert net["driver_opts"] == topology.NETWORK_OPTIONS
    got_services = {name: {net: cfg["ipv4_address"] for net, cfg in svc["networks"].items()}
                    for name, svc in compose["services"].items()}
    assert got_services == want["services"]
    plan = _plan(EXAMPLES / "default.yaml", "x")
    for node in plan.nodes:
        svc = compose["services"][node.name]
        assert svc["container_name"] == f"ilab-x-{node.name}"
        assert svc["labels"] == topology.labels("x", node)
        assert svc["sysctls"] == netlink.sysctls(node)
        assert set(svc["cap_add"]) == {"NET_ADMIN", "NET_RAW"}
        assert ("devices" in svc) == (node.role in topology.GATEWAY_ROLES)
        assert "privileged" not in svc and "ports" not in svc


# -- on a Docker engine ------------------------------------------------------------------------------
@pytest.fixture
def engine():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from lab.backends.docker.engine import engine_client

    client = engine_client()
    if client is None:
        pytest.skip("no Docker engine answers")
    return client


@pytest.fixture
def host_untouched():
    """The root namespace's firewall and forwarding are the same after the test."""
    def snapshot():
        return (subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout,
                Path("/proc/sys/net/ipv4/ip_forward").read_text())

    before = snapshot()
    yield
    assert snapshot() == before


@pytest.fixture
def lab_names():
    names: list[str] = []
    yield names
    for name in names:
        lifecycle.down(name)


def _name(tag: str) -> str:
    return f"dk{tag}{os.getpid() % 10000}"


def _labelled(client, name: str) -> list[str]:
    flt = {"label": f"ipsec-lab.lab={name}"}
    return ([c.name for c in client.containers.list(all=True, filters=flt)]
            + [n.name for n in client.networks.list(filters=flt)]
            + [v.name for v in client.volumes.list(filters=flt)])


def _root_addresses() -> list[ipaddress.IPv4Interface]:
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True)
    return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for link in json.loads(out.stdout) for a in link.get("addr_info", [])]


@pytest.mark.integration
def test_default_lab_containers_networks_and_host(engine, host_untouched, lab_names):
    name = _name("a")
    lab_names.append(name)
    lab = lifecycle.up(EXAMPLES / "default.yaml", name, "docker")
    from lab.check import run_check

    report = run_check(lab)
    assert report.ok, [f for f in report.findings if not f.ok]
    plan = lab.plan
    for node in plan.nodes:
        c = engine.containers.get(f"ilab-{name}-{node.name}")
        assert c.labels["ipsec-lab.lab"] == name and c.labels["ipsec-lab.node"] == node.name
        assert c.labels["ipsec-lab.role"] == node.role
        host = c.attrs["HostConfig"]
        assert host["Privileged"] is False and not host.get("PortBindings")
        assert set(host["CapAdd"]) == {"NET_ADMIN", "NET_RAW"}  # nothing more
        if node.role in topology.GATEWAY_ROLES:
            assert host["Sysctls"]["net.ipv4.ip_forward"] == "1"
            assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/net/tun"]
            mounts = {m["Source"]: m["Destination"] for m in c.attrs["Mounts"]}
            assert mounts[str(labstate.lab_dir(name) / node.name)] == \
                str(labstate.lab_dir(name) / node.name)
        links = lab.backend.exec(lab.state, node.name, ["ip", "-j", "addr"])
        got = {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
                                if a["family"] == "inet"]
               for link in json.loads(links.stdout) if link["ifname"] != "lo"}
        for iface in node.interfaces:  # the plan's names and every address, Docker's or not
            assert got[iface.name] == [str(a) for a in iface.addresses], (node.name, got)
    segs = topology.segments(plan)
    networks = engine.networks.list(filters={"label": f"ipsec-lab.lab={name}"})
    assert sorted(n.name for n in networks) == sorted(s.network_name(name) for s in segs)
    for net in networks:
        opts = net.attrs["Options"]
        assert opts["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert opts["com.docker.network.bridge.inhibit_ipv4"] == "true"
    # (a): the root namespace holds no address and no route in any lab range
    for addr in _root_addresses():
        assert not any(addr.ip in s.subnet for s in segs), addr
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True).stdout
    for s in segs:
        assert str(s.subnet) not in routes

    # (d): a second docker lab with the same public IPs is refused by field, leaving nothing
    other = _name("b")
    lab_names.append(other)
    with pytest.raises(LabError, match=r"vpn_gateway.public_ip: 203.0.113.0/29 overlaps lab"):
        lifecycle.up(EXAMPLES / "default.yaml", other, "docker")
    assert _labelled(engine, other) == [] and not labstate.lab_dir(other).exists()
    assert len(_labelled(engine, name)) == 9  # the first lab is untouched

    lifecycle.down(name)
    assert _labelled(engine, name) == []
    assert not labstate.lab_dir(name).exists()


@pytest.mark.integration
def test_multi_mapping_and_a_second_up_reuses_the_image(engine, host_untouched, lab_names,
                                                         monkeypatch):
    from lab.backends.docker import image as labimage
    from lab.check import run_check

    before = engine.images.get(labimage.image_tag()).id

    def no_build(*_args, **_kwargs):
        raise AssertionError("the image was rebuilt")

    monkeypatch.setattr(labimage, "_build_dockerfile", no_build)
    monkeypatch.setattr(labimage, "_build_mmdebstrap", no_build)
    name = _name("m")
    lab_names.append(name)
    lab = lifecycle.up(EXAMPLES / "spd-multi-mapping.yaml", name, "docker")
    report = run_check(lab)
    assert report.ok, [f for f in report.findings if not f.ok]
    assert len([f for f in report.findings if f.check.startswith(("udp ", "icmp "))]) == 16
    assert engine.images.get(labimage.image_tag()).id == before
    out = lab.backend.exec(lab.state, "vpngw", ["ip", "-4", "-o", "addr", "show", "eth1"]).stdout
    assert {"10.0.0.1/16", "10.0.0.1/24", "10.0.1.1/24", "10.0.2.1/24"} >= \
        {w for w in out.split() if w.startswith("10.")}


@pytest.mark.integration
def test_down_after_a_killed_orchestrator_leaves_nothing(engine, host_untouched):
    name = _name("k")
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "up", str(EXAMPLES / "default.yaml"),
                             "--name", name, "--backend", "docker"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = labstate.lab_dir(name) / "state.json"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with_pid = False
            if state_file.exists():
                with contextlib.suppress(ValueError):  # caught mid-write
                    with_pid = any(k.startswith("charon:")
                                   for k in json.loads(state_file.read_text())["pids"])
            if with_pid:
                break
            assert proc.poll() is None, "up finished before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _labelled(engine, name), "the killed up left nothing to clean"
    finally:
        if proc.poll() is None:
            proc.kill()
        result = subprocess.run([sys.executable, "-m", "lab.cli", "down", "--name", name],
                                cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _labelled(engine, name) == []
    assert not labstate.lab_dir(name).exists()
    again = subprocess.run([sys.executable, "-m", "lab.cli", "down", "--name", name],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


@pytest.mark.integration
def test_compose_parity(engine, host_untouched):
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose)")
    from lab.backends.docker.image import build_image
    from lab.check import run_check

    name = _name("c")
    env = dict(os.environ, COMPOSE_PROJECT_NAME=name, IPSEC_LAB_IMAGE=build_image(engine))
    base = [compose, "-f", str(COMPOSE_FILE), "-p", name]
    try:
        result = subprocess.run([*base, "up", "-d"], env=env, capture_output=True, text=True,
                                timeout=180)
        assert result.returncode == 0, result.stderr
        lab = lifecycle.adopt(name, EXAMPLES / "default.yaml")
        assert lab.state.backend == "docker"
        report = run_check(lab)
        assert report.ok, [f for f in report.findings if not f.ok]
        attached = lifecycle.attach(name)  # what `ipsec-lab check --name` does
        assert attached.state.nodes["vpngw"].handle == f"ilab-{name}-vpngw"
    finally:
        down = subprocess.run([*base, "down", "--remove-orphans"], env=env, capture_output=True,
                              text=True, timeout=180)
        lifecycle.down(name)
    assert down.returncode == 0, down.stderr
    assert _labelled(engine, name) == []
    assert not labstate.lab_dir(name).exists()
