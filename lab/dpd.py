"""From the cloud's DPD timeout to strongSwan's knobs.

IKEv1 has `dpd_timeout` per connection. IKEv2 has none: a peer is declared dead when the DPD
exchange exhausts the daemon-wide retransmit schedule, so the schedule is derived from the
configured timeout (one daemon per gateway makes that possible).
"""

from __future__ import annotations

from dataclasses import dataclass

RETRANSMIT_BASE = 1.4
RETRANSMIT_TRIES = 3
MIN_RETRANSMIT = 0.5  # seconds: only reached with a --time-scale far below 1
DEFAULT_RETRANSMIT = (4.0, 1.8, 5)  # strongSwan's own schedule: timeout, base, tries


@dataclass(frozen=True)
class DpdSchedule:
    timeout: int  # the cloud setting, seconds
    delay: int  # idle time before a DPD request is sent
    v1_timeout: int  # IKEv1 dpd_timeout


def dpd_schedule(timeout: int, version: str) -> DpdSchedule:
    """Probe every sixth of the timeout, so detection lands close to the configured timeout."""
    delay = max(1, timeout // 6)
    return DpdSchedule(timeout=timeout, delay=delay, v1_timeout=timeout)


def detection_window(schedule: DpdSchedule) -> tuple[float, float]:
    """When a gateway should declare its peer dead, in seconds after its traffic stopped: at the
    configured timeout (IKEv1: dpd_timeout; IKEv2: the first DPD after `delay` idle seconds plus
    the retransmit schedule, which adds up to timeout - delay), give or take one `delay`: the DPD
    check runs every `delay` seconds and the daemons see the SAs' last use in whole seconds, so
    the first DPD leaves up to one delay early (IKEv2) and death is noticed up to one delay late
    (IKEv1); plus a tolerance for scheduling of max(1 s, 5 %)."""
    tolerance = max(1.0, 0.05 * schedule.timeout)
    slack = schedule.delay + tolerance
    return schedule.timeout - slack, schedule.timeout + slack


def retransmit_total(timeout: float, base: float, tries: int) -> float:
    """How long strongSwan retransmits before giving up: sum of timeout*base^n, n=0..tries."""
    return sum(timeout * base**n for n in range(tries + 1))


def retransmit_for(schedules: list[DpdSchedule | None],
                   time_scale: float = 1.0) -> tuple[float, float, int] | None:
    """Daemon-wide IKEv2 retransmit settings for the shortest DPD timeout on that daemon.

    Detection after a cut ~= delay (until the next DPD) + the retransmit total, so the total
    is set to timeout - delay. Several IKEv2 tunnels with different timeouts on one daemon
    share the shortest one (a protocol limit of IKEv2 in strongSwan, reported in `status`).

    Without IKEv2 DPD the daemon keeps strongSwan's own schedule, scaled like the lifetimes when
    `time_scale` shortens them: a rekey or re-authentication must fit a retransmission into the
    IKE_SA's over_time (a tenth of its lifetime), or one lost packet takes the SA and its
    CHILD_SAs down at the hard lifetime (seen with IKEv1 at 6 s: over_time 1 s, first
    retransmit after 4 s).
    """
    active = [s for s in schedules if s is not None]
    if not active:
        if time_scale >= 1:
            return None
        first, base, tries = DEFAULT_RETRANSMIT
        return max(MIN_RETRANSMIT, round(first * time_scale, 2)), base, tries
    shortest = min(active, key=lambda s: s.timeout)
    target = shortest.timeout - shortest.delay
    first = target / retransmit_total(1.0, RETRANSMIT_BASE, RETRANSMIT_TRIES)
    # the same schedule paces IKE set-up: below half a second a loaded machine drops negotiations
    return max(MIN_RETRANSMIT, round(first, 2)), RETRANSMIT_BASE, RETRANSMIT_TRIES
