"""The ipsec.conf translator against strongSwan's own starter: the same ipsec.conf loaded once by
starter + stroke and once through `lab.customer.translate` over VICI, each into a scratch charon,
must give the same connections as each daemon reports them (`list-conns`). Any difference is a
bug in the translator.

starter hard-codes /var/run and /usr/lib/ipsec: each scratch daemon runs in a private mount and
network namespace (`unshare`) with a tmpfs on /run, and starter and its charon come from the
distribution's packages, unpacked (never installed) and laid over /usr/lib/ipsec in that
namespace only. Nothing reaches the host's network: the namespace has only a loopback.

What this proves is what `list-conns` shows in strongSwan 5.9.8: addresses, IKE version,
reauthentication and rekey times, uniqueness, DPD delay and timeout, each auth round's class and
IDs, and per child its mode, rekey time/bytes/packets, DPD and close actions and traffic
selectors. It does not list proposals, hard lifetimes or start actions, so a translator bug in
those would not show here (the customer-config labs negotiate with the translated proposals).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import starter
from lab.control import Vici, decode
from lab.customer.own import OwnConfig
from lab.customer.translate import translate_ipsec_conf
from lab.errors import LabError
from lab.ipsecconf import load_customer_config, parse_secrets
from lab.timing import patience
from tests.conftest import EXAMPLES

PLUGINS = ("random nonce openssl gcrypt aes sha1 sha2 md5 hmac gmp pem pkcs1 pubkey x509 "
           "curve25519 kdf kernel-netlink socket-default stroke vici")
STRONGSWAN_CONF = """charon {{
  load_modular = no
  load = {plugins}
  port = 500
  port_nat_t = 4500
  plugins {{
    vici {{
      socket = unix://{dir}/charon.vici
    }}
    stroke {{
      secrets_file = {dir}/ipsec.secrets
    }}
  }}
  filelog {{
    scratch {{
      path = {dir}/charon.log
      default = 1
    }}
  }}
}}
starter {{
  load_warning = no
}}
"""
SETTLE = 0.5  # s the starter's list must stay the same before it counts as loaded


@pytest.fixture(scope="module")
def packages() -> Path:
    """starter and charon of this machine's strongSwan version, unpacked once into the cache."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mount and network namespaces")
    return starter.packages()


class Scratch:
    """A charon in namespaces of its own, started by starter (`ipsec_conf`) or bare."""

    def __init__(self, packages: Path, directory: Path, ipsec_conf: Path | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        (directory / "strongswan.conf").write_text(STRONGSWAN_CONF.format(plugins=PLUGINS,
                                                                          dir=directory))
        if not (directory / "ipsec.secrets").exists():
            (directory / "ipsec.secrets").write_text("")
        command = (["/usr/lib/ipsec/starter", "--nofork", "--conf", str(ipsec_conf)]
                   if ipsec_conf else ["/usr/lib/ipsec/charon"])
        self.proc = subprocess.Popen(
            starter.sandbox(packages, command, stub=False),
            env={**os.environ, "STRONGSWAN_CONF": str(directory / "strongswan.conf")},
            stdout=(directory / "stdout").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.socket = directory / "charon.vici"
        deadline = time.monotonic() + patience(20)
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"scratch daemon did not start: "
                                     f"{(directory / 'stdout').read_text()[-2000:]}")
            time.sleep(0.05)

    def connections(self) -> list[dict]:
        with Vici(self.socket) as v:
            return sorted((decode(c) for c in v.session.list_conns()), key=lambda c: sorted(c))

    def settled(self, count: int) -> list[dict]:
        """starter hands the conns to charon after it started: until `count` are listed and the
        list stays the same for SETTLE seconds (bounded)."""
        deadline = time.monotonic() + patience(20)
        last, since = self.connections(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.connections()
            if now != last:
                last, since = now, time.monotonic()
            elif len(now) >= count and time.monotonic() - since >= SETTLE:
                break
        return last

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session this test started
            try:
                self.proc.wait(timeout=patience(10))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def both_ways(packages: Path, tmp: Path, conf_text: str, secrets_text: str = "") -> tuple:
    """(what starter's daemon lists, what the translator's daemon lists)."""
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "ipsec.conf"
    conf.write_text(conf_text)
    secrets = parse_secrets(secrets_text, "ipsec.secrets", tmp) if secrets_text else None
    tree, _ = translate_ipsec_conf(conf_text, str(conf), tmp, secrets)
    (tmp / "starter").mkdir(exist_ok=True)
    (tmp / "starter" / "ipsec.secrets").write_text(secrets_text)
    starter = Scratch(packages, tmp / "starter", conf)
    try:
        theirs = starter.settled(len(tree.get("connections", {})))
    finally:
        starter.stop()
    ours_daemon = Scratch(packages, tmp / "translated")
    try:
        with Vici(ours_daemon.socket) as v:
            v.load(tree)
        ours = ours_daemon.connections()
    finally:
        ours_daemon.stop()
    for daemon in (starter, ours_daemon):  # its namespaces go with its processes
        assert daemon.proc.returncode is not None
    return theirs, ours


def _diff(theirs: list[dict], ours: list[dict]) -> list[str]:
    out = []
    t = {k: v for c in theirs for k, v in c.items()}
    o = {k: v for c in ours for k, v in c.items()}
    for name in sorted(set(t) | set(o)):
        if t.get(name) != o.get(name):
            a, b = t.get(name) or {}, o.get(name) or {}
            keys = sorted({*a, *b}, key=str)
            out += [f"{name}.{k}: starter {a.get(k)!r}, translator {b.get(k)!r}"
                    for k in keys if a.get(k) != b.get(k)]
    return out


EXAMPLE_PAIRS = [(p, p.with_suffix(".secrets")) for p in sorted((EXAMPLES / "customer").glob(
    "ipsec*.conf"))]


@pytest.mark.integration
@pytest.mark.parametrize("conf", [p for p, _ in EXAMPLE_PAIRS], ids=lambda p: p.name)
def test_shipped_ipsec_confs_mean_the_same_to_starter(packages, tmp_path, conf):
    secrets = conf.with_suffix(".secrets")
    theirs, ours = both_ways(packages, tmp_path, conf.read_text(),
                             secrets.read_text() if secrets.exists() else "")
    assert theirs, "starter loaded nothing"
    assert not _diff(theirs, ours), "\n".join(_diff(theirs, ours))


# Configs in the styles people write: a %default, a base conn pulled in by also=, overrides.
STYLES = {
    "fqdn-ids-ikev2": """config setup
    uniqueids=never
conn %default
    keyexchange=ikev2
    ikelifetime=8h
    lifetime=1h
    margintime=3m
    rekeyfuzz=50%
    dpdaction=restart
    dpddelay=15s
conn cloud
    left=198.51.100.2
    leftid=@cgw.idc.example
    leftsubnet=192.168.1.0/24,192.168.2.0/24
    right=203.0.113.1
    rightid=@vpngw.cloud.example
    rightsubnet=10.0.0.0/16
    authby=secret
    auto=start
""",
    "also-chain-ikev1": """conn base
    keyexchange=ikev1
    authby=psk
    left=%defaultroute
    right=203.0.113.1
    dpdaction=clear
    dpdtimeout=2m
    auto=ignore
conn mid
    also=base
    leftsubnet=192.168.10.0/24
    rekeymargin=5m
    auto=ignore
conn a
    also=mid
    rightsubnet=10.1.0.0/24
    auto=add
conn b
    also=mid
    rightsubnet=10.2.0.0/24
    rekey=no
    auto=route
""",
    "transport-and-ports": """conn t
    type=transport
    left=198.51.100.2
    right=203.0.113.1
    leftprotoport=udp/1701
    rightprotoport=17/%any
    authby=secret
    ikelifetime=1h
    lifetime=20m
    auto=add
""",
}


@pytest.mark.integration
@pytest.mark.parametrize("style", sorted(STYLES))
def test_ipsec_confs_in_common_styles_mean_the_same_to_starter(packages, tmp_path, style):
    theirs, ours = both_ways(packages, tmp_path, STYLES[style])
    assert theirs, "starter loaded nothing"
    assert not _diff(theirs, ours), "\n".join(_diff(theirs, ours))


SETTINGS = {
    "keyexchange": st.sampled_from(["ike", "ikev1", "ikev2"]),
    "left": st.sampled_from(["198.51.100.2", "%defaultroute", "%any"]),
    "leftid": st.sampled_from(["198.51.100.2", "@cgw.example", "%any"]),
    "right": st.sampled_from(["203.0.113.1", "%any"]),
    "rightid": st.sampled_from(["203.0.113.1", "@vpngw.example", "%any"]),
    "leftsubnet": st.sampled_from(["192.168.1.0/24", "192.168.1.0/24,192.168.2.0/24"]),
    "rightsubnet": st.sampled_from(["10.0.1.0/24", "10.0.0.0/16,10.9.0.0/24"]),
    "dpdaction": st.sampled_from(["none", "clear", "hold", "restart"]),
    "dpddelay": st.sampled_from(["10s", "1m", "45"]),
    "dpdtimeout": st.sampled_from(["30s", "2m", "150"]),
    "ikelifetime": st.sampled_from(["1h", "8h", "90m", "28800s"]),
    "lifetime": st.sampled_from(["1h", "20m", "3600"]),
    "margintime": st.sampled_from(["3m", "9m", "60s"]),
    "rekeyfuzz": st.sampled_from(["0%", "50%", "100%"]),
    "rekey": st.sampled_from(["yes", "no"]),
    "type": st.sampled_from(["tunnel", "transport"]),
}
PLACES = st.sampled_from(["%default", "base", "conn"])


@st.composite
def generated_ipsec_conf(draw) -> str:
    """A config setup, a %default, a base pulled in by also=, and one to three conns; each
    setting drawn lands in one of those places (a conn's own value wins, as in starter)."""
    sections: dict[str, list[str]] = {"%default": ["authby=secret"], "base": ["auto=ignore"]}
    names = [f"c{n}" for n in range(draw(st.integers(1, 3)))]
    for name in names:
        sections[name] = ["also=base", f"auto={draw(st.sampled_from(['add', 'route', 'start']))}"]
    for key, values in SETTINGS.items():
        if draw(st.booleans()):
            where = draw(PLACES)
            for name in (names if where == "conn" else [where]):
                sections[name].append(f"{key}={draw(values)}")
    uniqueids = draw(st.sampled_from(["yes", "no", "never", "replace", "keep"]))
    out = [f"config setup\n    uniqueids={uniqueids}\n"]
    for name, lines in sections.items():
        out.append(f"conn {name}\n" + "".join(f"    {line}\n" for line in lines))
    return "\n".join(out)


@pytest.mark.integration
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(generated_ipsec_conf())
def test_generated_ipsec_confs_mean_the_same_to_starter(packages, tmp_path_factory, text):
    theirs, ours = both_ways(packages, tmp_path_factory.mktemp("gen"), text)
    assert not _diff(theirs, ours), text + "\n".join(_diff(theirs, ours))


# -- starter's own words on a file it refuses ---------------------------------------------------
GOOD = """conn cloud
  keyexchange=ikev2
  left=198.51.100.2
  right=203.0.113.1
  leftsubnet=192.168.1.0/24
  rightsubnet=10.0.0.0/16
  authby=secret
  auto=add
"""


def _advise(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from lab.cli import main; main()", "advise",
                           str(EXAMPLES / "default.yaml"), "--customer-config", str(conf)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.integration
def test_a_file_starter_cannot_start_with_shows_its_words_then_the_labs(packages, tmp_path):
    conf = tmp_path / "ipsec.conf"
    conf.write_text(GOOD.replace("  auto=add\n", "  ike aes256\n  auto=add\n"))
    for load in (load_customer_config, OwnConfig.load):
        with pytest.raises(LabError) as caught:
            load(conf)
        text = str(caught.value)
        assert text.startswith(f"{conf}: strongSwan's starter cannot start with it; it says:\n")
        assert f"  {conf}:8: missing value for setting 'ike'" in text  # starter's, file and line
        assert "\nipsec-lab: " in text.split("missing value", 1)[1]  # then the lab's
    done = _advise(conf)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "missing value for setting 'ike'" in done.stdout + done.stderr


@pytest.mark.integration
@pytest.mark.parametrize("line, words", [
    ("  bogus=5\n", "# unknown keyword 'bogus'"),
    ("  type=funnel\n", "# bad policy value: type=funnel"),
    ("  dpdaction=explode\n", "# bad value: dpdaction=explode"),
])
def test_what_starter_ignores_is_refused_with_the_line(packages, tmp_path, line, words):
    """starter goes on without a setting (or a conn) it cannot parse: a gateway would run
    something else than the file says, so the lab refuses it and points at the line."""
    conf = tmp_path / "ipsec.conf"
    conf.write_text(GOOD.replace("  auto=add\n", line + "  auto=add\n"))
    with pytest.raises(LabError) as caught:
        load_customer_config(conf)
    text = str(caught.value)
    assert text.startswith(f"{conf}: strongSwan's starter ignores parts of it; it says:\n")
    assert f"  {words}" in text
    key = line.strip().split("=")[0]
    assert f"ipsec-lab: {conf}:8: {line.strip()} (" in text, text
    assert key in text


@pytest.mark.integration
def test_a_file_starter_takes_is_read_without_a_note(packages, tmp_path):
    conf = tmp_path / "ipsec.conf"
    conf.write_text(GOOD)
    config = load_customer_config(conf)
    assert [c.name for c in config.connections] == ["cloud"] and config.notes == []
    assert starter.judge(conf) == starter.Verdict()
