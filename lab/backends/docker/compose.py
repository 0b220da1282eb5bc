"""Docker Compose: the compose file the plan implies, and finding a Compose project's containers
to adopt them as a lab (`ipsec-lab adopt --compose`, lab.lifecycle.adopt).

Compose builds the same networks and containers as `deploy` (compose/docker-compose.yml); what
Compose cannot express is applied afterwards exactly as after `deploy` (lab.backends.docker.
wiring). The project must be named like the lab, so its containers carry the lab's names and
label and `ipsec-lab down` finds them.
"""

from __future__ import annotations

from typing import Any

import docker

from lab.backends.docker.topology import LABEL, Segment, container_name, containers, segments
from lab.backends.docker.wiring import Running, inspect
from lab.errors import LabError
from lab.plan import LabPlan

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


def compose_model(plan: LabPlan) -> dict[str, Any]:
    """What compose/docker-compose.yml must say for `plan` (used by the parity test)."""
    segs = segments(plan)
    return {
        "networks": {s.key: {"subnet": str(s.subnet), "gateway": str(s.gateway)} for s in segs},
        "services": {
            n.name: {s.key: str(s.members[n.name][1]) for s in segs if n.name in s.members}
            for n in containers(plan)
        },
    }


def project_containers(client: docker.DockerClient, plan: LabPlan,
                       segs: list[Segment]) -> dict[str, Running]:
    """The running containers of the Compose project named like the lab, by container name,
    once each is checked to be the plan's: named and labelled as the lab's, on the plan's
    networks with the plan's addresses."""
    name = plan.name
    found = {c.labels.get(COMPOSE_SERVICE): c for c in client.containers.list(
        all=True, filters={"label": f"{COMPOSE_PROJECT}={name}"})}
    missing = [n.name for n in containers(plan) if n.name not in found]
    if missing:
        raise LabError(f"compose project {name!r} has no service(s) {', '.join(missing)} "
                       "(run `docker-compose -p NAME up -d` with compose/docker-compose.yml)")
    stopped = [n for n, c in found.items() if c.status != "running"]
    if stopped:
        raise LabError(f"compose project {name!r}: {', '.join(sorted(stopped))} not running")
    running = {}
    for node in containers(plan):
        c = found[node.name]
        if c.name != container_name(name, node.name) or c.labels.get(LABEL) != name:
            raise LabError(f"compose service {node.name}: container {c.name} must be named "
                           f"{container_name(name, node.name)} and labelled {LABEL}={name} "
                           "(export COMPOSE_PROJECT_NAME=NAME before docker-compose up)")
        networks = c.attrs["NetworkSettings"]["Networks"]
        for seg in segs:
            if node.name not in seg.members:
                continue
            net = networks.get(seg.network_name(name))
            want = str(seg.members[node.name][1])
            if net is None or net.get("IPAddress") != want:
                raise LabError(f"compose service {node.name}: expected on network "
                               f"{seg.network_name(name)} with {want} (the plan for the spec); "
                               f"got {net.get('IPAddress') if net else 'not connected'}")
        running[c.name] = inspect(client.api, c.name)
    return running
