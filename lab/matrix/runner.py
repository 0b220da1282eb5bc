"""The matrix executor: many cases against daemons that stay up.

`run_matrix` brings up `jobs` independent labs from one base spec (daemon-wide settings fixed by
`DaemonTuning`) per customer implementation the cases ask for (charon, or libreswan's pluto:
`lab.matrix.pluto_peer` drives that one with its own tools), then each lab's worker thread runs
its implementation's cases one after another:

  plan    one-tunnel spec = base tunnel + the case's ike/ipsec/customer fields -> build_plan ->
          render both gateways -> parse swanctl.conf (addresses are the running lab's)
  load    secrets + connections over VICI into both running daemons
  initiate from the initiator, bounded by the per-case timeout
  verify  control plane on both ends (IKE_SA, one CHILD_SA per mapping, algorithms = the case's),
          data plane (one ICMP echo per mapping through a long-running agent, `agent.py serve`),
          and on sampled cases the wire (the persistent capture agent's counters: ESP seen, no
          marker and nothing but IKE/ESP in clear)
  clean   terminate, unload connections and secrets, and prove no SA is left on either daemon

Failed negotiations are classified (`lab.diagnose`) from the initiator's initiate log and
the VICI `log` events of both daemons, which a listener thread per daemon collects all along.
charon raises those events asynchronously (its vici logger queues each line for a worker thread),
so they trail the daemon's work by an unbounded time: the refusing daemon's lines may arrive after
the initiator's own answer, or during the next case. A case's events are therefore cut out of each
daemon's stream by marks that daemon logs itself (`LabRig.case_logs`), never by arrival time. A lab
whose daemon stops answering is torn down and brought up again; the run goes on.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import os
import queue
import re
import secrets
import select
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from vici.exception import CommandException

from lab import diagnose as cls
from lab import lifecycle
from lab import verify as vf
from lab.agent import esp_packets
from lab.control import InitiateFailed, Vici
from lab.dataplane import detect
from lab.errors import LabError
from lab.files import write_private
from lab.matrix.cases import (
    ERROR,
    ESTABLISHED,
    PRIVATE_ID,
    TIMEOUT,
    UNSUPPORTED,
    UNSUPPORTED_LIBRESWAN,
    WRONG_PSK,
    Case,
    implementation_of,
    to_tunnel_fields,
)
from lab.matrix.pluto_peer import PlutoGone, PlutoPeer
from lab.matrix.results import CaseResult
from lab.negotiation import rekey_children
from lab.plan import DaemonTuning, Gateway, LabPlan, build_plan
from lab.probe import Agent
from lab.ranges import DOCUMENTATION
from lab.render import render_gateway
from lab.running import Lab
from lab.spec import DEFAULT_SPEC, LabSpec, Tunnel, dump_spec, load_spec, parse_spec
from lab.spec.rules import check_rules
from lab.swanctl import parse, shared_secrets
from lab.timing import patience


def tuning() -> DaemonTuning:
    """The matrix daemons' settings. Their short retransmit schedule (to end an unanswered case
    quickly) is the lab's choice, not a tunnel's: it is stretched where the lab's waits are
    (lab.timing), as a responder under emulation can take longer than 1 s to answer IKE_AUTH."""
    base = DaemonTuning()
    if base.retransmit is None:
        return base
    timeout, factor, tries = base.retransmit
    return replace(base, retransmit=(patience(timeout), factor, tries))


TUNING = DaemonTuning()  # as on an unhurried host (tuning() is what a run uses)
CLEAN_TIMEOUT = patience(3.0)  # for SAs to disappear after a case before the lab counts as wedged
LOG_WAIT = patience(5.0)  # bound on waiting for a daemon's log events of a case to arrive
# A mark in a daemon's log stream: vici logs every terminate request, also one that matches no SA.
_MARK = re.compile(r"vici terminate IKE_SA '(MX[0-9a-f]{6})-(\d+)-(start|end)'")


class Wedged(LabError):
    """A daemon of the lab stopped answering or keeps SAs it was told to drop: restart the lab."""


@dataclass
class RunOptions:
    case_timeout: float = patience(10.0)
    wire_every: int = 25  # wire check on the first case of each lab and on every Nth after it


@dataclass
class LabRig:
    """One running matrix lab with its persistent VICI sessions, log listeners and agents."""

    lab: Lab
    options: RunOptions
    base: LabSpec
    sessions: dict[str, Vici] = field(default_factory=dict)  # the strongSwan gateways'
    plutos: dict[str, PlutoPeer] = field(default_factory=dict)  # libreswan customer gateways'
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    done: int = 0

    def __post_init__(self) -> None:
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self._logged = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._case: dict[str, int | None] = {}  # per daemon: the case whose start mark came last
        self._ended: dict[str, dict[int, list[dict[str, Any]]]] = {}  # its lines, once ended
        self.prefix = f"MX{secrets.token_hex(3)}"
        self.counter = itertools.count(1)
        plan = self.lab.plan
        self.cloud = plan.gateways[0]
        self.customer = plan.gateways[1]
        self.tunnel = self.base.tunnels[0]
        timeout = self.options.case_timeout + 10
        try:
            for gw in (self.cloud, self.customer):
                if gw.pluto:
                    self.plutos[gw.node] = PlutoPeer(self.lab, gw.node)
                    continue
                path = self.lab.backend.host_dir(self.lab.state.name, gw.node) / "charon.vici"
                self.sessions[gw.node] = self._stack.enter_context(Vici(path, timeout))
                self.logs[gw.node] = []
                self._case[gw.node] = None
                self._ended[gw.node] = {}
                next_event = self._stack.enter_context(self.sessions[gw.node].events(["log"]))
                thread = threading.Thread(target=self._tap, args=(gw.node, next_event), daemon=True)
                thread.start()
            probe = plan.probes[0]
            self.echo = Agent(self.lab, probe.idc_node, ["serve", "--iface", "eth0", "--echo"])
            self.wire = Agent(self.lab, plan.internet_node,
                              ["serve", "--iface", plan.node(plan.internet_node).bridge or "br0",
                               "--capture"])
            self.echo.wait_ready()
            self.wire.wait_ready()
            self._clear_base()
        except BaseException:
            self.close()
            raise

    # -- plumbing ------------------------------------------------------------------------------
    def _tap(self, node: str, next_event: Callable[[float], tuple[str, dict] | None]) -> None:
        """Collect `node`'s log events, cut into cases at the marks `_mark` had it log."""
        while not self._stop.is_set():
            try:
                event = next_event(time.monotonic() + 0.5)
            except (OSError, ValueError, EOFError):
                return
            if event is None:
                continue
            data = event[1]
            mark = _MARK.fullmatch(str(data.get("msg", "")))
            with self._logged:
                if mark is None or mark.group(1) != self.prefix:
                    self.logs[node].append(data)
                    continue
                n = int(mark.group(2))
                if mark.group(3) == "start":  # what came before belongs to earlier cases
                    self.logs[node] = []
                    self._case[node] = n
                elif self._case[node] == n:
                    self._ended[node] = {n: self.logs[node]}
                    self.logs[node] = []
                    self._case[node] = None
                self._logged.notify_all()

    def _mark(self, n: int, edge: str) -> None:
        """Have both daemons log a mark of case `n`'s start or end into their `log` streams: a
        terminate of an IKE_SA name no SA has (charon logs the request, finds nothing, changes
        nothing). A daemon's log events arrive in the order it logged them. pluto's case starts
        where its log file ends."""
        if edge == "start":
            for peer in self.plutos.values():
                peer.start_case()
        for v in self.sessions.values():
            with suppress(CommandException):
                for _ in v.session.terminate({"ike": f"{self.prefix}-{n}-{edge}", "loglevel": -1}):
                    pass

    def case_logs(self, n: int, limit: float = LOG_WAIT) -> dict[str, list[dict[str, Any]]]:
        """Both daemons' log events of case `n`: each daemon's lines between the case's start and
        end marks. The end mark is logged now, after everything the daemons logged about the case
        (the refusal came before the answer that ended it), so once every end mark has arrived
        (waited for up to `limit`), all the case's lines have, in whatever order or delay the
        daemons delivered them; lines of other cases never fall inside the marks."""
        self._mark(n, "end")
        with self._logged:
            self._logged.wait_for(lambda: all(n in ended for ended in self._ended.values()),
                                  timeout=limit)
            out = {}
            for node, ended in self._ended.items():
                if n in ended:
                    out[node] = ended.pop(n)
                else:  # the daemon's events did not all come back in time: what did, of this case
                    out[node] = list(self.logs[node]) if self._case[node] == n else []
        for node, peer in self.plutos.items():
            out[node] = peer.events()
        return out

    def _agent(self, agent: Agent, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        proc = agent.proc
        if proc.poll() is not None or not proc.stdin or not proc.stdout:
            raise Wedged(f"probe agent in {agent.node} exited")
        try:
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise Wedged(f"probe agent in {agent.node} exited") from None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise Wedged(f"probe agent in {agent.node} did not answer {command['op']!r}")
        line = proc.stdout.readline()
        if not line:
            raise Wedged(f"probe agent in {agent.node} exited")
        return json.loads(line)

    def close(self) -> None:
        self._stop.set()
        for name in ("echo", "wire"):
            agent = getattr(self, name, None)
            if agent is not None:
                agent.kill()
        self._stack.close()

    def _clear_base(self) -> None:
        """`up` established the base tunnel: drop it so every case starts from nothing."""
        for node, peer in self.plutos.items():
            peer.clean([ch.name for c in self.lab.plan.gateway(node).connections
                        for ch in c.children])
        for gw in (self.cloud, self.customer):
            if gw.pluto:
                continue
            v = self.sessions[gw.node]
            for conn in gw.connections:
                with suppress(Exception):
                    v.unload(conn.name)
            for secret in v.shared_secrets():
                with suppress(Exception):
                    v.session.unload_shared({"id": secret})
        self.clean(force=True)

    # -- one case --------------------------------------------------------------------------------
    def case_plan(self, case: Case) -> tuple[LabPlan, str, str]:
        """The case's plan, and (initiator node, responder node)."""
        plan, _ = case_plan(self.base, case, self.lab.state.name, self.lab.plan)
        passive = plan_tunnel(self.base, case).negotiation_type == "passive"
        cloud, customer = plan.gateways[0].node, plan.gateways[1].node
        return plan, *((customer, cloud) if passive else (cloud, customer))

    def run(self, case: Case) -> CaseResult:
        n = next(self.counter)
        timings: dict[str, float] = {}
        clock = [time.perf_counter()]

        def lap(phase: str) -> None:
            now = time.perf_counter()
            timings[phase] = round((now - clock[0]) * 1000, 2)
            clock[0] = now

        deadline = time.monotonic() + self.options.case_timeout
        negotiated: dict[str, Any] = {}
        detail, outcome, log_lines = "", ESTABLISHED, []
        plan, initiator, responder = self.case_plan(case)
        configs = {gw.node: _vici_config(plan, gw, self.lab) for gw in plan.gateways if not gw.pluto}
        conn = plan.gateways[0].connections[0]
        lap("plan")
        wire = self.done % max(self.options.wire_every, 1) == 0
        initiate_log: list[str] = []
        try:
            self._mark(n, "start")
            for node, config in configs.items():
                self.sessions[node].load(config)
            for gw in plan.gateways:
                if gw.pluto:
                    self.plutos[gw.node].load(plan, gw)
            lap("load")
            start = self._initiator(initiator, conn.name)
            failure: str | None = None
            for child in [ch.name for ch in plan.gateway(initiator).connections[0].children]:
                left = deadline - time.monotonic()
                if left <= 0.05:
                    failure = "per-case timeout"
                    break
                try:
                    initiate_log += start(child, left)
                except InitiateFailed as exc:
                    initiate_log += exc.log
                    failure = str(exc)
                    break
            lap("initiate")
            came_up = failure is None
            if failure is None:
                problems, negotiated = self.verify(case, plan, responder, deadline)
                if not problems and plan.gateway(initiator).connections[0].version == 2:
                    problems += self.verify_pfs(case, plan, initiator, negotiated)
                lap("control")
                if not problems:
                    problems += self.data_plane(case, plan, n, wire, deadline)
                    lap("data")
                if problems:
                    failure = "; ".join(problems)
            if failure is not None:
                timed_out = time.monotonic() >= deadline
                events = self.case_logs(n)
                reason, evidence = cls.classify(
                    initiate_log, events, failure, timed_out=timed_out,
                    local_ids=plan.local_ids())
                outcome = reason or ERROR
                detail = failure if reason is None else f"{reason}: {evidence}"
                if came_up and case.kind == "negative" and reason in (None, TIMEOUT):
                    # the mismatch did not stop the tunnel: a peer accepted it (libreswan takes
                    # another PFS group in IKEv1 Quick Mode); that is the outcome, not a lab error
                    outcome = ESTABLISHED
                    detail = (f"established although the case set up a {case.expect}; what "
                              f"the ends report: {failure}")
                log_lines = cls.transcript(initiate_log, events, initiator, responder)
                lap("classify")
            else:
                detail = _describe(negotiated, plan, wire)
        except Wedged:
            raise
        except PlutoGone as exc:
            raise Wedged(str(exc)) from None
        except LabError as exc:  # e.g. strongSwan refused a connection
            outcome, detail = ERROR, str(exc)
        except (OSError, TimeoutError) as exc:
            outcome, detail = TIMEOUT, f"VICI did not answer within the case: {exc}"
        finally:
            self.done += 1
        try:
            self.clean(conn.name, initiator, force=outcome != ESTABLISHED)
        except PlutoGone as exc:
            raise Wedged(str(exc)) from None
        lap("clean")
        return CaseResult.of(case, outcome, negotiated=negotiated, timings=timings, detail=detail,
                             log=log_lines)

    def _initiator(self, node: str, ike: str) -> Callable[[str, float], list[str]]:
        """How the case's initiator starts one CHILD_SA: VICI for charon, whack for pluto."""
        if node in self.plutos:
            return self.plutos[node].initiate
        vici = self.sessions[node]
        return lambda child, left: vici.initiate(child, ike, left)

    def sas(self, node: str) -> list[dict[str, Any]]:
        """A gateway's SAs in VICI's shape, from either daemon."""
        if node in self.plutos:
            return self.plutos[node].sas()
        return self.sessions[node].sas()

    def verify(self, case: Case, plan: LabPlan, responder: str,
               deadline: float) -> tuple[list[str], dict[str, Any]]:
        """Both ends: IKE_SA established, every mapping's CHILD_SA installed, the case's algorithms."""
        p = case.params
        problems: list[str] = []
        negotiated: dict[str, Any] = {}
        for gw in plan.gateways:
            mine = gw.connections[0]
            wanted = {ch.name for ch in mine.children}
            while True:  # the responder installs its last CHILD_SA just after the initiator's
                ike = vf.find_ike(self.sas(gw.node), mine.name)
                children = vf.installed_children(ike)
                if (ike and wanted <= set(children)) or gw.node != responder \
                        or time.monotonic() >= deadline:
                    break
                time.sleep(0.05 if gw.pluto else 0.002)  # pluto's status is polled by whack
            side = gw.side
            if ike is None:
                problems.append(f"{side}: no ESTABLISHED IKE_SA")
                continue
            wrong = vf.ike_problems(ike, p["ike_encryption"], p["ike_integrity"], p["dh_group"],
                                    mine.version)
            if gw.side == "cloud":
                negotiated["ike"] = {k: ike.get(k) for k in
                                     ("version", "encr-alg", "encr-keysize", "integ-alg", "dh-group",
                                      "local-id", "remote-id")}
            for ch in mine.children:
                child = children.get(ch.name)
                if child is None:
                    wrong.append(f"CHILD_SA {ch.name} not installed")
                    continue
                wrong += vf.algorithm_problems(child, p["ipsec_encryption"], p["ipsec_integrity"])
                if problem := vf.selector_problem(child, ch.local_ts, ch.remote_ts):
                    wrong.append(problem)
                if mine.version == 1 and (problem := vf.pfs_problem(child, p["pfs"])):
                    wrong.append(problem)
                if gw.side == "cloud":
                    negotiated.setdefault("esp", {})[ch.name] = {
                        k: child.get(k) for k in ("encr-alg", "encr-keysize", "integ-alg", "dh-group")}
            problems += [f"{side}: {w}" for w in wrong]
        return problems, negotiated

    def verify_pfs(self, case: Case, plan: LabPlan, initiator: str,
                   negotiated: dict[str, Any]) -> list[str]:
        """IKEv2's first CHILD_SAs come from IKE_AUTH without DH: rekey each once and check the
        group on both ends, also "none" when PFS is disabled (a rekey that carries no KE)."""
        conn = plan.gateway(initiator).connections[0]
        children = [ch.name for ch in conn.children]
        try:
            rekey_children(self.lab, initiator, conn.name, children, timeout=patience(5.0))
        except LabError as exc:
            return [f"PFS: {exc}"]
        wanted = vf.dh_name(case.params["pfs"])
        problems = []
        for gw in plan.gateways:
            got = vf.installed_children(vf.find_ike(self.sas(gw.node), conn.name))
            for name in children:
                dh = got.get(name, {}).get("dh-group")
                if dh != wanted:
                    problems.append(f"{gw.side}: PFS {dh or 'none'} after a CHILD_SA rekey, "
                                    f"expected {case.params['pfs']}")
                elif gw.side == "cloud":
                    esp = negotiated.setdefault("esp", {}).setdefault(name, {})
                    esp["dh-group"], esp["pfs-verified"] = dh, "after a CHILD_SA rekey"
        return problems

    def data_plane(self, case: Case, plan: LabPlan, n: int, wire: bool, deadline: float) -> list[str]:
        """One ICMP echo per mapping, IDC host -> VPC host; on sampled cases the wire too."""
        tag = f"{self.prefix}-{n}"
        probes = [{"src": str(p.idc_addr), "dst": str(p.vpc_addr), "marker": f"{tag}-{i}"}
                  for i, p in enumerate(plan.probes) if p.delivered]
        if wire:
            self._agent(self.wire, {"op": "arm", "prefix": self.prefix}, patience(5))
        left = max(0.2, min(patience(2.0), deadline - time.monotonic()))
        reply = self._agent(self.echo, {"op": "ping", "prefix": tag, "probes": probes,
                                        "timeout": left}, left + 5)
        missing = sorted({p["marker"] for p in probes} - set(reply.get("echoed", [])))
        problems = [f"data: no echo reply for {m}" for m in missing]
        if wire:
            counts = self._agent(self.wire, {"op": "counts", "esp": 2 * len(probes),
                                             "timeout": patience(1.0)}, patience(6))
            seen = counts.get("counts", {})
            if counts.get("leaked"):
                problems.append(f"wire: marker in clear: {counts['leaked'][:2]}")
            null = _esp_null(plan)
            if counts.get("readable") and not null:  # a cipher that did not encrypt
                problems.append(f"wire: marker readable inside ESP: {counts['readable'][:2]}")
            if null and not counts.get("readable"):  # ESP NULL: integrity only, the payload shows
                problems.append("wire: ESP NULL, yet no marker readable inside ESP")
            if seen.get("other"):
                problems.append(f"wire: not IKE/ESP: {counts.get('other', [])[:2]}")
            if esp_packets(seen) < 2 * len(probes):
                problems.append(f"wire: {esp_packets(seen)} ESP packets, expected "
                                f"{2 * len(probes)}")
            self.last_wire = seen
        return problems

    def clean(self, conn: str | None = None, initiator: str | None = None, force: bool = True) -> None:
        """Terminate, unload, and prove both daemons hold no SA, no connection and no shared
        secret: the next case starts from nothing (an unload VICI refused shows here)."""
        nodes = list(self.sessions)
        try:
            if conn and initiator and not force and initiator in self.sessions:
                with suppress(LabError):
                    self.sessions[initiator].terminate_ike(conn, timeout=patience(2.0))
            for peer in self.plutos.values():
                peer.clean()
            for node in nodes:
                v = self.sessions[node]
                if conn:
                    with suppress(CommandException):  # nothing loaded: proven empty below
                        v.unload(conn)
                    with suppress(CommandException):
                        v.session.unload_shared({"id": f"ike-{conn}"})
            loaded = {node: (self.sessions[node].connections(), self.sessions[node].shared_secrets())
                      for node in nodes}
            if any(conns or keys for conns, keys in loaded.values()):
                raise Wedged("left loaded after the case: " + ", ".join(
                    f"{node}: connections {conns}, shared secrets {keys}"
                    for node, (conns, keys) in loaded.items() if conns or keys))
            end = time.monotonic() + CLEAN_TIMEOUT
            while True:
                left = {node: self.sessions[node].sas() for node in nodes}
                if not any(left.values()):
                    return
                if time.monotonic() >= end:
                    raise Wedged("SAs left after the case: " + ", ".join(
                        f"{node}: {len(sas)}" for node, sas in left.items() if sas))
                for node, sas in left.items():
                    for sa in sas:
                        _force_terminate(self.sessions[node], sa.get("uniqueid"))
                time.sleep(0.005)
        except (OSError, TimeoutError) as exc:
            raise Wedged(f"VICI did not answer while cleaning up: {exc}") from None


def _force_terminate(v: Vici, uniqueid: str | None) -> None:
    if not uniqueid:
        return
    with suppress(Exception):
        for _ in v.session.terminate({"ike-id": uniqueid, "force": "yes", "timeout": -1,
                                      "loglevel": -1}):
            pass


def _describe(negotiated: dict[str, Any], plan: LabPlan, wire: bool) -> str:
    ike = negotiated.get("ike", {})
    text = (f"IKEv{ike.get('version')} {ike.get('encr-alg')}/{ike.get('encr-keysize', '-')} "
            f"{ike.get('integ-alg')} {ike.get('dh-group')}; {len(plan.probes)} mapping(s) verified "
            "on both ends and by ICMP echo")
    return text + (("; wire: ESP only, no marker outside it" + (
        " (ESP NULL: the payload readable inside, integrity only)" if _esp_null(plan) else ""))
        if wire else "")


def _esp_null(plan: LabPlan) -> bool:
    """The case's ESP authenticates without encrypting: its markers show inside ESP."""
    return plan.gateways[0].connections[0].esp_proposal.startswith("null")


def plan_tunnel(base: LabSpec, case: Case) -> Tunnel:
    """The base spec's first tunnel with the case's cloud settings and customer deviations."""
    t = base.tunnels[0]
    fields = to_tunnel_fields(case)
    data = t.model_dump()
    data["ike"] = {**data["ike"], **fields["ike"]}
    data["ipsec"] = {**data["ipsec"], **fields["ipsec"]}
    data["customer"] = fields["customer"]
    if case.customer.get(PRIVATE_ID):
        nat = t.customer_gateway.behind_nat
        if nat is None:
            raise LabError(f"case {case.id}: the NAT identity case needs a base tunnel whose "
                           "customer gateway is behind NAT (customer_gateway.behind_nat)")
        customer_ike = dict(data["customer"].get("ike") or {})
        customer_ike["local_id"] = {"type": "address", "value": str(nat.private_ip)}
        data["customer"] = {**data["customer"], "ike": customer_ike}
    if data["negotiation_type"] == "traffic-triggered":
        data["negotiation_type"] = "active"  # the matrix initiates over VICI itself
    return Tunnel.model_validate(data)


def case_plan(base: LabSpec, case: Case, name: str, lab_plan: LabPlan | None) -> tuple[LabPlan, LabSpec]:
    """build_plan for the one-tunnel spec of `case` (raises LabError for what the lab refuses)."""
    spec = LabSpec(vpn_gateway=base.vpn_gateway, tunnels=[plan_tunnel(base, case)])
    problems = check_rules(spec)
    if problems:
        raise LabError("case spec invalid: " + "; ".join(problems))
    dataplane = lab_plan.dataplane if lab_plan else detect()
    return build_plan(spec, name, dataplane, tuning()), spec


def _vici_config(plan: LabPlan, gw: Gateway, lab: Lab) -> dict[str, Any]:
    files = render_gateway(plan, gw, lab.backend.run_dir(lab.state.name, gw.node))
    config = parse(files["swanctl.conf"], f"{gw.node}/swanctl.conf")
    for conn in config.get("connections", {}).values():
        for child in conn.get("children", {}).values():
            child["start_action"] = "none"  # the matrix initiates over VICI
    return config


def refused(base: LabSpec, case: Case) -> CaseResult:
    """SM4/SM3 cells: never run; the lab must refuse to plan them."""
    try:
        case_plan(base, case, "mx-refusal", None)
    except LabError as exc:
        detail = str(exc).replace("\n", " ").strip()
        # only the endpoints' own refusal makes a cell unsupported; any other planning error is
        # an error of the case (it would otherwise hide as "unsupported")
        if UNSUPPORTED_BY_ENDPOINTS in detail:
            return CaseResult.of(case, UNSUPPORTED, detail=detail)
        return CaseResult.of(case, ERROR, detail=f"planning failed for another reason: {detail}")
    return CaseResult.of(case, ERROR, detail="expected the lab to refuse this cell, it planned it")


def with_implementation(base: LabSpec, implementation: str) -> LabSpec:
    """The base spec with every tunnel's customer gateway run by `implementation`."""
    data = dump_spec(base)
    for t in data.get("tunnels", []):
        t.setdefault("customer_gateway", {})["implementation"] = implementation
    return parse_spec(data, f"the base spec with customer gateways on {implementation}")


def libreswan_refusal(base: LabSpec, case: Case) -> CaseResult | None:
    """A libreswan case whose cloud settings libreswan lacks (DH2, DES...): what the lab's plan
    says it lacks, as the case's result; None when libreswan can run it."""
    try:
        plan, spec = case_plan(base, case, "mx-refusal", None)
    except LabError:
        return None  # the case itself says why when it runs
    lacks = lifecycle.libreswan_lacks(plan, spec)
    if not lacks:
        return None
    return CaseResult.of(case, UNSUPPORTED_LIBRESWAN, detail="; ".join(lacks))


UNSUPPORTED_BY_ENDPOINTS = "is not supported by the strongSwan endpoints"  # lab.catalogue
# private range -> (step per slot, the longest prefix a range may have to move by that step)
_PRIVATE = ((ipaddress.IPv4Network("10.0.0.0/8"), 1 << 16, 16),
            (ipaddress.IPv4Network("172.16.0.0/12"), 1 << 16, 16),
            (ipaddress.IPv4Network("192.168.0.0/16"), 1 << 12, 20))


def _moved(value: str, slot: int) -> str:
    """One address or range moved to address slot `slot` (0 = unchanged)."""
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError:
        return value
    for doc in DOCUMENTATION:
        if net.subnet_of(doc):
            step = 8 * slot  # a new /29 per slot (one uplink network per public IP on docker)
            break
    else:
        for private, unit, longest in _PRIVATE:
            if net.subnet_of(private):
                if net.prefixlen < longest:
                    raise LabError(f"{value}: too large to give each matrix lab its own range "
                                   f"(needs /{longest} or longer); use --jobs 1")
                step = unit * slot
                break
        else:
            return value
    moved = ipaddress.IPv4Network((int(net.network_address) + step, net.prefixlen))
    home = next(n for n in (*DOCUMENTATION, *(p for p, _, _ in _PRIVATE)) if net.subnet_of(n))
    if not moved.subnet_of(home):
        raise LabError(f"{value}: no room for matrix lab slot {slot} inside {home}")
    return str(moved.network_address) if "/" not in value else str(moved)


def relocate(data: Any, slot: int) -> Any:
    """A dumped spec with every address and range moved to slot `slot`, so several labs of one
    spec can share a Docker engine (which refuses overlapping networks); slot 0 is the spec."""
    if slot == 0:
        return data
    if isinstance(data, dict):
        return {k: relocate(v, slot) for k, v in data.items()}
    if isinstance(data, list):
        return [relocate(v, slot) for v in data]
    if isinstance(data, str) and data[:1].isdigit():
        return _moved(data, slot)
    return data


def case_secrets(base: LabSpec) -> list[str]:
    """Secrets to redact from logs and reports."""
    out = [WRONG_PSK]
    for t in base.tunnels:
        out.append(t.pre_shared_key.get_secret_value())
        if t.customer.pre_shared_key:
            out.append(t.customer.pre_shared_key.get_secret_value())
    return out


# -- the run ---------------------------------------------------------------------------------------
def lab_names(jobs: int, prefix: str | None = None) -> list[str]:
    prefix = prefix or f"mx{os.getpid() % 1000}"
    names = [f"{prefix}-{k}" for k in range(1, jobs + 1)]
    for name in names:
        if len(name) > 16:
            raise LabError(f"--name: {prefix!r} is too long for lab names like {name!r} (16 characters)")
    return names


@dataclass
class RunInfo:
    backend: str = ""
    dataplane: str = ""
    labs: list[str] = field(default_factory=list)
    restarts: int = 0


def run_matrix(
    cases: Sequence[Case],
    *,
    spec_path: str | Path = DEFAULT_SPEC,
    backend: str = "auto",
    jobs: int = 2,
    name_prefix: str | None = None,
    options: RunOptions | None = None,
    on_result: Callable[[CaseResult], None] = lambda _: None,
    progress: Callable[[str], None] = lambda _: None,
    stop: threading.Event | None = None,
    info: RunInfo | None = None,
) -> list[CaseResult]:
    """Run `cases` on `jobs` labs; `on_result` sees every result as it finishes (any thread, one
    at a time). Labs are always torn down, also on KeyboardInterrupt."""
    options = options or RunOptions()
    stop = stop or threading.Event()
    info = info or RunInfo()
    base = load_spec(spec_path)
    bases = {impl: with_implementation(base, impl) for impl in {implementation_of(c) for c in cases}}
    results: list[CaseResult] = []
    lock = threading.Lock()

    def record(result: CaseResult) -> None:
        with lock:
            results.append(result)
            on_result(result)

    runnable: dict[str, list[Case]] = {}
    for case in cases:
        impl = implementation_of(case)
        if case.unsupported:
            record(refused(bases[impl], case))
        elif impl == "libreswan" and (refusal := libreswan_refusal(bases[impl], case)):
            record(refusal)
        else:
            runnable.setdefault(impl, []).append(case)
    if not runnable or stop.is_set():
        return results
    # each implementation its own labs (a lab's customer gateway runs one daemon) and queue
    prefix = name_prefix or f"mx{os.getpid() % 1000}"
    todo: dict[str, queue.Queue[Case]] = {}
    implementation: dict[str, str] = {}
    for impl, group in runnable.items():
        todo[impl] = queue.Queue()
        for case in group:
            todo[impl].put(case)
        for name in lab_names(max(1, min(jobs, len(group))),
                              prefix if impl == "strongswan" else f"{prefix}{impl[0]}"):
            implementation[name] = impl
    names = list(implementation)
    info.labs = names
    errors: list[BaseException] = []
    rigs: dict[str, LabRig] = {}

    def bring_up(name: str) -> LabRig:
        """Lab `name` from the base spec, its addresses in a slot of their own: labs of one run
        (and other labs on the same engine) must not overlap on docker; netns does not care."""
        index = names.index(name)
        for attempt in range(8):
            slot = index + attempt * len(names)
            lab_spec = parse_spec(relocate(dump_spec(bases[implementation[name]]), slot),
                                  f"{spec_path} (slot {slot})")
            with tempfile.TemporaryDirectory(prefix="ipsec-lab-matrix-") as tmp:
                path = Path(tmp) / "spec.yaml"
                write_private(path, yaml.safe_dump(dump_spec(lab_spec), sort_keys=False))
                lifecycle.down(name)
                try:
                    lab = lifecycle.up(path, name, backend, tuning=tuning())
                except LabError as exc:
                    if "overlap" in str(exc) and attempt < 7:
                        continue  # another lab holds these ranges: try the next slot
                    raise
            info.backend, info.dataplane = lab.state.backend, lab.state.dataplane
            rig = LabRig(lab, options, lab_spec)
            rigs[name] = rig
            return rig
        raise AssertionError("unreachable")

    def worker(name: str) -> None:
        try:
            rig = bring_up(name)
            progress(f"lab {name} up ({rig.lab.state.backend}, {rig.lab.state.dataplane})")
            while not stop.is_set():
                try:
                    case = todo[implementation[name]].get_nowait()
                except queue.Empty:
                    return
                try:
                    result = rig.run(case)
                except Wedged as exc:
                    result = CaseResult.of(case, TIMEOUT if "answer" in str(exc) else ERROR,
                                           detail=f"lab {name} wedged: {exc}; restarted")
                    record(result)
                    progress(f"lab {name} wedged ({exc}); restarting it")
                    info.restarts += 1
                    rig.close()
                    if stop.is_set():
                        return
                    rig = bring_up(name)
                    continue
                record(result)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            if not stop.is_set():
                errors.append(exc)
                stop.set()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True, name=n) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:
        stop.set()
        raise
    finally:
        _teardown(stop, rigs, threads, names, options)
    if errors:
        exc = errors[0]
        if isinstance(exc, LabError):
            raise LabError(f"matrix lab failed: {exc}") from None
        raise exc
    return results


def _teardown(stop: threading.Event, rigs: dict[str, LabRig], threads: list[threading.Thread],
              names: list[str], options: RunOptions) -> None:
    """Tear every lab of the run down; a second Ctrl-C does not cut this short (it is re-raised
    once everything is gone)."""
    stop.set()
    interrupted = False
    steps: list[list[Callable[[], object]]] = [
        [rig.close for rig in rigs.values()],
        [functools.partial(t.join, timeout=options.case_timeout + 5) for t in threads],
        [functools.partial(lifecycle.down, name) for name in names],
    ]
    for pending in steps:
        for step in pending:
            for _ in range(3):
                try:
                    step()
                    break
                except KeyboardInterrupt:
                    interrupted = True
                except Exception:  # noqa: BLE001 - the next step (down) removes it anyway
                    break
    if interrupted:
        raise KeyboardInterrupt


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


__all__ = ["RunInfo", "RunOptions", "LabRig", "run_matrix", "case_plan", "plan_tunnel", "refused",
           "default_jobs", "lab_names", "case_secrets", "shared_secrets"]
