"""The soak's memory judgement on synthetic samples and on two recorded 45-minute soaks: the
schedule it samples on, and the trend after the warm-up (flat, growing, noisy, vanished, too
short, settling). No lab: pure functions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lab.scenarios.soak import (
    TREND_FLOOR_KIB_PER_HOUR,
    TREND_WARM_UP,
    memory_trend,
    sample_offsets,
    trend_warm_up,
)

WARM = 120.0  # s: the warm-up these series are judged with
MINUTE = 60.0


def series(per_process: dict[str, list[int | None]], step: float = MINUTE
           ) -> list[tuple[float, dict[str, int | None]]]:
    """Samples `step` s apart, as the soak keeps them: (s since the first, {name: KiB})."""
    count = len(next(iter(per_process.values())))
    return [(i * step, {name: values[i] for name, values in per_process.items()})
            for i in range(count)]


def linear(start: int, kib_per_hour: float, count: int = 21, step: float = MINUTE) -> list[int | None]:
    return [round(start + kib_per_hour * i * step / 3600) for i in range(count)]


def by_name(trend, name: str):
    return next(p for p in trend.processes if p.name == name)


# --- the schedule ---------------------------------------------------------------------------


def test_schedule_of_a_long_soak_is_one_sample_a_minute_to_the_end() -> None:
    offsets = sample_offsets(20 * MINUTE)
    assert offsets == [i * MINUTE for i in range(21)]


def test_schedule_of_a_short_soak_is_a_sixth_of_it() -> None:
    assert sample_offsets(60.0) == pytest.approx([0, 10, 20, 30, 40, 50, 60])


def test_schedule_ends_at_the_end_when_the_interval_does_not_divide_it() -> None:
    offsets = sample_offsets(20 * MINUTE + 30)
    assert offsets[-1] == 20 * MINUTE + 30
    assert offsets[-2] == 20 * MINUTE
    steps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert max(steps) <= MINUTE and min(steps) > 0


def test_schedule_of_no_time_is_one_sample() -> None:
    assert sample_offsets(0.0) == [0.0]


def test_warm_up_is_two_minutes_three_of_the_longer_rekey_periods_or_half_the_soak() -> None:
    assert trend_warm_up([5, 16]) == TREND_WARM_UP  # time scale 0.1: the 2 minutes
    assert trend_warm_up([54, 162]) == 3 * 162  # time scale 1: three CHILD_SA rekeys
    assert trend_warm_up([5, 16], 2700) == 1350  # a 45-minute soak: its first half


RECORDED = Path(__file__).parent / "data" / "soak"


@pytest.mark.parametrize("name", ["45min-default-malloc.json", "45min-arena-max-1.json"])
def test_recorded_soaks_settle_and_pass(name: str) -> None:
    """Two real soaks (bench.bench_soak, 45 minutes, time scale 0.1; one with charon on
    MALLOC_ARENA_MAX=1): each charon grows ever more slowly, all of it heap, none of it file
    pages; judged on their second half they pass, and their growth there is well under what it
    was right after the two-minute warm-up."""
    data = json.loads((RECORDED / name).read_text())
    samples = [(t, rss) for t, rss in data["samples"]]
    span = samples[-1][0]
    trend = memory_trend(samples, trend_warm_up([5, 16], span))
    assert trend.judged and trend.ok, trend.detail()
    early = {p.name: p for p in memory_trend(
        [s for s in samples if s[0] <= span / 2], TREND_WARM_UP).processes}
    for p in trend.processes:
        if p.name.startswith(("charon", "anon")):
            assert p.slope_kib_per_hour is not None and early[p.name].slope_kib_per_hour is not None
            assert p.slope_kib_per_hour < early[p.name].slope_kib_per_hour / 2, p.describe()
        if p.name.startswith("file"):
            assert p.slope_kib_per_hour == 0


def test_a_leak_still_fails_when_judged_on_the_second_half() -> None:
    """3 KiB for each of 1000 rekeys an hour, steadily, over 45 minutes: the second half shows
    the full rate, over the bound."""
    minutes = 45
    grows = [11000 + round(3000 * i / 60) for i in range(minutes + 1)]
    trend = memory_trend(series({"charon a": grows}), trend_warm_up([5, 16], minutes * MINUTE))
    assert trend.judged and trend.ok is False
    assert trend.processes[0].slope_kib_per_hour == pytest.approx(3000, rel=0.01)


# --- the trend ------------------------------------------------------------------------------


def test_flat_memory_passes() -> None:
    trend = memory_trend(series({"charon vpngw1": [12000] * 21, "orchestrator": [80000] * 21}), WARM)
    assert trend.judged and trend.ok is True and trend.reason == ""
    assert trend.samples == 19 and trend.span_s == 18 * MINUTE
    for p in trend.processes:
        assert p.status == "flat" and p.slope_kib_per_hour == pytest.approx(0)
    assert by_name(trend, "charon vpngw1").bound_kib_per_hour == TREND_FLOOR_KIB_PER_HOUR
    assert by_name(trend, "orchestrator").bound_kib_per_hour == pytest.approx(8000)


def test_steady_growth_above_the_bound_fails() -> None:
    # 12 MiB of RSS: the bound is the 2048 KiB/h floor; 3000 KiB/h is above it
    trend = memory_trend(series({"charon vpngw1": linear(12000, 3000), "orchestrator": [80000] * 21}),
                         WARM)
    assert trend.judged and trend.ok is False
    charon = by_name(trend, "charon vpngw1")
    assert charon.status == "grows" and charon.slope_kib_per_hour == pytest.approx(3000, rel=0.01)
    assert by_name(trend, "orchestrator").status == "flat"
    assert "charon vpngw1: grows" in trend.detail() and "bound 2048 KiB/h" in trend.detail()


def test_growth_above_the_floor_but_under_a_tenth_of_a_large_process_passes() -> None:
    # 80 MiB: the bound is 8000 KiB/h; 6000 KiB/h is over the floor but under it
    trend = memory_trend(series({"orchestrator": linear(80000, 6000)}), WARM)
    assert trend.judged and trend.ok is True
    assert by_name(trend, "orchestrator").slope_kib_per_hour == pytest.approx(6000, rel=0.01)


def test_growth_below_the_bound_passes() -> None:
    trend = memory_trend(series({"charon vpngw1": linear(12000, 1500)}), WARM)
    assert trend.judged and trend.ok is True
    p = by_name(trend, "charon vpngw1")
    assert p.status == "flat" and p.slope_kib_per_hour == pytest.approx(1500, rel=0.02)


def test_noisy_but_flat_memory_passes_where_the_end_points_alone_would_fail() -> None:
    rng = random.Random(7)
    values: list[int | None] = [12000 + rng.randint(-300, 300) for _ in range(21)]
    values[2], values[-1] = 11400, 12600  # the first warm sample low, the last one high
    trend = memory_trend(series({"charon vpngw1": values}), WARM)
    p = by_name(trend, "charon vpngw1")
    end_points = (12600 - 11400) / (18 / 60)  # KiB/h: 1200 KiB in 18 minutes, over the bound
    assert end_points > TREND_FLOOR_KIB_PER_HOUR
    assert trend.judged and trend.ok is True, trend.detail()
    assert p.status == "flat" and abs(p.slope_kib_per_hour or 0) < TREND_FLOOR_KIB_PER_HOUR


def test_a_vanished_process_fails_and_says_so() -> None:
    charon: list[int | None] = [12000] * 21
    charon[14:] = [None] * 7
    trend = memory_trend(series({"charon vpngw1": charon, "orchestrator": [80000] * 21}), WARM)
    assert trend.judged and trend.ok is False
    p = by_name(trend, "charon vpngw1")
    assert p.status == "vanished" and p.vanished_at_s == 14 * MINUTE
    assert "charon vpngw1: vanished (no RSS from 840 s)" in trend.detail()
    assert by_name(trend, "orchestrator").status == "flat"


def test_a_process_missing_from_a_sample_counts_as_vanished() -> None:
    samples = series({"charon vpngw1": [12000] * 21, "orchestrator": [80000] * 21})
    del samples[20][1]["charon vpngw1"]
    trend = memory_trend(samples, WARM)
    assert trend.ok is False and by_name(trend, "charon vpngw1").status == "vanished"


def test_a_process_vanished_in_a_short_run_still_fails() -> None:
    trend = memory_trend(series({"charon vpngw1": [12000, 12000, None, None]}, step=10.0), WARM)
    assert trend.judged and trend.ok is False
    assert by_name(trend, "charon vpngw1").status == "vanished"


def test_a_one_minute_run_is_not_judged_and_says_why() -> None:
    samples = series({"charon vpngw1": [12000] * 7, "orchestrator": [80000] * 7}, step=10.0)
    trend = memory_trend(samples, WARM)
    assert not trend.judged and trend.ok is None
    assert "0 samples after the warm-up, fewer than 4" in trend.reason
    assert "under 300 s" in trend.reason
    assert all(p.status == "not judged" for p in trend.processes)
    assert "growth not judged" in trend.detail()


def test_too_few_samples_after_the_warm_up_is_not_judged() -> None:
    # 3 samples after the warm-up, though they span 10 minutes
    samples = [(0.0, {"c": 12000}), (130.0, {"c": 12000}), (430.0, {"c": 12000}),
               (730.0, {"c": 12000})]
    trend = memory_trend(samples, WARM)
    assert not trend.judged and trend.ok is None
    assert trend.reason == "3 samples after the warm-up, fewer than 4"


def test_a_span_under_five_minutes_is_not_judged_however_many_samples() -> None:
    # a sample every 10 s after the warm-up, 4.5 minutes of them, growing fast
    samples = [(WARM + i * 10.0, {"c": 12000 + 100 * i}) for i in range(28)]
    trend = memory_trend(samples, WARM)
    assert not trend.judged and trend.ok is None
    assert trend.reason == "they span 270 s, under 300 s"
    # the figures are reported all the same
    p = by_name(trend, "c")
    assert p.status == "not judged" and p.warm_kib == 12000
    assert p.slope_kib_per_hour == pytest.approx(36000)


def test_a_jump_inside_the_warm_up_does_not_fail() -> None:
    values: list[int | None] = [6000, 9000, *[12000] * 19]  # grows at 0 and 60 s; flat from 120 s
    trend = memory_trend(series({"charon vpngw1": values}), WARM)
    assert trend.judged and trend.ok is True
    p = by_name(trend, "charon vpngw1")
    assert p.warm_kib == 12000 and p.slope_kib_per_hour == pytest.approx(0)
    # the same series with no warm-up: the jump is taken for growth
    assert memory_trend(series({"charon vpngw1": values}), 0.0).ok is False


def test_the_trend_is_json_serialisable() -> None:
    trend = memory_trend(series({"charon vpngw1": linear(12000, 3000)}), WARM)
    back = json.loads(json.dumps(trend.as_dict()))
    assert back["judged"] is True and back["ok"] is False
    assert back["processes"][0]["name"] == "charon vpngw1"
    assert back["processes"][0]["status"] == "grows"
