"""Time schedules (triggers/cron.py): cron, presets and timedelta in a time zone, DST days,
start/end dates and catch-up. Pure: no store, no clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadenza.authoring.pipeline import _check_schedule
from cadenza.core.cron import PRESETS, expand_preset, is_unknown_preset
from cadenza.core.errors import CadenzaError
from cadenza.triggers.cron import (
    CronSchedule,
    DeltaSchedule,
    Interval,
    Timetable,
    schedule_of,
    to_utc,
    zone,
)

PARIS = "Europe/Paris"
NY = "America/New_York"


def local(t: datetime, tz: str) -> str:
    return t.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M%z")


def intervals_of_local_day(expr: str, tz: str, day: str) -> list[Interval]:
    tt = Timetable(CronSchedule(expr, tz), timezone=tz)
    start = to_utc(day, tz)
    end = to_utc(datetime.fromisoformat(day) + timedelta(days=1), tz) - timedelta(microseconds=1)
    return list(tt.intervals(start, end))


def assert_tiled(intervals: list[Interval]) -> None:
    starts = [i.start for i in intervals]
    assert len(set(starts)) == len(starts), "duplicate logical date"
    assert starts == sorted(starts)
    for a, b in itertools.pairwise(intervals):
        assert a.end == b.start, f"gap or overlap between {a} and {b}"
        assert a.end > a.start


def test_expand_preset_maps_every_preset_and_leaves_cron_alone() -> None:
    assert expand_preset("@daily") == "0 0 * * *"
    assert expand_preset("  @hourly ") == "0 * * * *"
    assert expand_preset("30 2 * * *") == "30 2 * * *"
    assert expand_preset("@fortnightly") == "@fortnightly"
    assert is_unknown_preset(" @fortnightly") and not is_unknown_preset("@weekly")
    assert not is_unknown_preset("0 0 * * *")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_authoring_accepts_and_triggers_evaluate_the_same_presets(preset: str) -> None:
    assert _check_schedule(preset) is None
    assert CronSchedule(preset).expr == PRESETS[preset]


def test_an_unknown_preset_is_refused_by_authoring_and_triggers() -> None:
    problem = _check_schedule("@fortnightly")
    assert problem is not None and "unknown schedule preset" in problem.message
    with pytest.raises(CadenzaError):
        CronSchedule("@fortnightly")


@pytest.mark.parametrize(("day", "count"), [("2026-03-29", 23), ("2026-10-25", 25),
                                             ("2026-06-01", 24)])
def test_hourly_in_paris_runs_once_per_real_hour_on_dst_days(day: str, count: int) -> None:
    got = intervals_of_local_day("@hourly", PARIS, day)
    assert len(got) == count
    assert_tiled(got)
    assert all(i.end - i.start == timedelta(hours=1) for i in got)


def test_hourly_skips_the_missing_hour_and_repeats_the_doubled_one() -> None:
    spring = [local(i.start, PARIS) for i in intervals_of_local_day("@hourly", PARIS, "2026-03-29")]
    assert "2026-03-29 01:00+0100" in spring and "2026-03-29 03:00+0200" in spring
    assert not any(s.startswith("2026-03-29 02:") for s in spring)
    autumn = [local(i.start, PARIS) for i in intervals_of_local_day("@hourly", PARIS, "2026-10-25")]
    assert "2026-10-25 02:00+0200" in autumn and "2026-10-25 02:00+0100" in autumn


def test_daily_at_a_skipped_time_runs_once_after_the_jump() -> None:
    s = CronSchedule("30 2 * * *", PARIS)
    t = to_utc("2026-03-27T12:00", PARIS)
    runs = []
    for _ in range(4):
        t = s.next_after(t)
        runs.append(local(t, PARIS))
    assert runs == ["2026-03-28 02:30+0100", "2026-03-29 03:30+0200",
                    "2026-03-30 02:30+0200", "2026-03-31 02:30+0200"]


def test_daily_at_a_repeated_time_runs_once_at_its_first_occurrence() -> None:
    s = CronSchedule("30 2 * * *", PARIS)
    t = to_utc("2026-10-24T12:00", PARIS)
    runs = []
    for _ in range(3):
        t = s.next_after(t)
        runs.append(local(t, PARIS))
    assert runs == ["2026-10-25 02:30+0200", "2026-10-26 02:30+0100", "2026-10-27 02:30+0100"]


def test_two_local_times_landing_on_one_instant_make_one_run() -> None:
    # 02:00 does not exist on 2026-03-29 and is read as 03:00 CEST, which 03:00 also names.
    s = CronSchedule("0 2,3 * * *", PARIS)
    t = to_utc("2026-03-29T00:00", PARIS)
    first, second = s.next_after(t), s.next_after(s.next_after(t))
    assert local(first, PARIS) == "2026-03-29 03:00+0200"
    assert local(second, PARIS) == "2026-03-30 02:00+0200"


@pytest.mark.parametrize(("day", "hours"), [("2026-03-08", 23), ("2026-11-01", 25),
                                             ("2026-07-04", 24)])
def test_daily_midnight_in_new_york_has_a_23_or_25_hour_interval(day: str, hours: int) -> None:
    tt = Timetable(CronSchedule("@daily", NY), timezone=NY)
    (interval,) = tt.intervals(day, day)
    assert local(interval.start, NY).startswith(f"{day} 00:00")
    assert interval.end - interval.start == timedelta(hours=hours)


@pytest.mark.parametrize("expr", ["@hourly", "@daily", "30 2 * * *", "*/20 * * * *",
                                  "0 */3 * * *", "15 1-3 * * 0", "0 2,3 * * *", "@weekly"])
@pytest.mark.parametrize("tz", [PARIS, NY, "UTC", "Australia/Lord_Howe"])
@pytest.mark.parametrize("month", [3, 10])  # around both changes, both hemispheres
def test_instants_around_dst_changes_are_strictly_increasing_and_consistent(
        expr: str, tz: str, month: int) -> None:
    s = CronSchedule(expr, tz)
    t = datetime(2026, month, 1, tzinfo=UTC)
    it = s.iter_after(t)
    prev = t
    limit = t + timedelta(days=40 if "*/20" not in expr else 36)
    n = 0
    while True:
        cur = next(it)
        if cur > limit:
            break
        assert cur > prev
        if n % 7 == 0:  # spot-check the one-step API against the iterator
            assert s.next_after(prev) == cur
            assert s.prev_at_or_before(cur) == cur
            assert s.prev_at_or_before(cur - timedelta(microseconds=1)) == (
                prev if prev != t else s.prev_at_or_before(cur - timedelta(microseconds=1)))
        prev = cur
        n += 1
    assert n > 0


def test_timedelta_schedule_is_absolute_time_from_start_date() -> None:
    s = schedule_of(timedelta(hours=6), PARIS, "2026-03-28T00:00")
    assert isinstance(s, DeltaSchedule)
    tt = Timetable(s, start=to_utc("2026-03-28", PARIS), timezone=PARIS)
    got = list(tt.intervals("2026-03-28", "2026-03-30"))
    assert_tiled(got)
    assert all(i.end - i.start == timedelta(hours=6) for i in got)
    assert got[0].start == to_utc("2026-03-28T00:00", PARIS)
    # After the change the wall-clock time shifts by an hour (documented behaviour).
    assert local(got[0].start, PARIS) == "2026-03-28 00:00+0100"
    assert local(got[-1].start, PARIS) == "2026-03-29 19:00+0200"


def test_catchup_creates_every_missed_interval_since_start_date() -> None:
    tt = Timetable(CronSchedule("@daily"), start=to_utc("2026-01-01"), catchup=True)
    now = to_utc("2026-01-05T00:00:01")
    due = tt.due(now, after=None)
    assert [i.start.day for i in due] == [1, 2, 3, 4]
    assert due[-1].end == to_utc("2026-01-05")
    assert tt.due(now, after=due[-1].start) == []
    assert [i.start.day for i in tt.due(now, after=due[1].start)] == [3, 4]
    assert len(tt.due(now, after=None, limit=2)) == 2


def test_no_catchup_creates_only_the_latest_interval() -> None:
    tt = Timetable(CronSchedule("@daily"), start=to_utc("2026-01-01"), catchup=False)
    now = to_utc("2026-01-05T12:00")
    assert [i.start.day for i in tt.due(now, after=None)] == [4]
    assert [i.start.day for i in tt.due(now, after=to_utc("2026-01-01"))] == [4]
    assert tt.due(now, after=to_utc("2026-01-04")) == []


def test_nothing_is_due_before_the_first_interval_ends() -> None:
    tt = Timetable(CronSchedule("@daily"), start=to_utc("2026-01-01T10:00"), catchup=True)
    assert tt.first == to_utc("2026-01-02")
    assert tt.due(to_utc("2026-01-02T23:59"), after=None) == []
    assert [i.start for i in tt.due(to_utc("2026-01-03T00:00"), after=None)] == [to_utc("2026-01-02")]


def test_end_date_is_the_last_logical_date() -> None:
    tt = Timetable(CronSchedule("@daily"), start=to_utc("2026-01-01"),
                   end=to_utc("2026-01-03"), catchup=True)
    due = tt.due(to_utc("2026-02-01"), after=None)
    assert [i.start.day for i in due] == [1, 2, 3]
    assert tt.next_due_at(due[-1].start, to_utc("2026-02-01")) is None
    no_catchup = Timetable(CronSchedule("@daily"), start=to_utc("2026-01-01"),
                           end=to_utc("2026-01-03"))
    assert [i.start.day for i in no_catchup.due(to_utc("2026-02-01"), after=None)] == [3]


def test_next_due_at_is_the_end_of_the_next_interval() -> None:
    tt = Timetable(CronSchedule("0 2 * * *", PARIS), start=to_utc("2026-01-01", PARIS),
                   catchup=True, timezone=PARIS)
    assert tt.next_due_at(None, to_utc("2026-01-01")) == to_utc("2026-01-02T02:00", PARIS)
    assert tt.next_due_at(to_utc("2026-01-05T02:00", PARIS), to_utc("2026-01-06")) == (
        to_utc("2026-01-07T02:00", PARIS))


def test_backfill_range_reads_naive_dates_in_the_pipeline_zone_and_stops_at_now() -> None:
    tt = Timetable(CronSchedule("@daily", PARIS), timezone=PARIS)
    got = list(tt.intervals("2026-03-27", "2026-03-30", now=to_utc("2026-03-30T12:00", PARIS)))
    assert [local(i.start, PARIS)[:10] for i in got] == ["2026-03-27", "2026-03-28", "2026-03-29"]
    assert_tiled(got)


def test_timetable_of_a_pipeline_reads_its_options() -> None:
    from cadenza import pipeline, task

    @task
    def step() -> None:
        return None

    @pipeline(schedule="@daily", timezone=PARIS, start_date="2026-01-01", catchup=True)
    def daily() -> None:
        step()

    @pipeline
    def unscheduled() -> None:
        step()

    tt = Timetable.of(daily)
    assert tt is not None and tt.catchup
    assert tt.first == to_utc("2026-01-01", PARIS)
    assert Timetable.of(daily.plan) is not None  # the Plan itself, as the scheduler holds it
    assert Timetable.of(unscheduled) is None


def test_bad_schedules_are_refused_with_a_hint() -> None:
    with pytest.raises(CadenzaError, match="not a valid 5-field cron"):
        CronSchedule("0 2 * *")
    with pytest.raises(CadenzaError, match="positive"):
        DeltaSchedule(timedelta(0), datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(CadenzaError, match="not a date"):
        to_utc("yesterday")


def test_interval_key_is_the_utc_logical_date() -> None:
    i = Interval(start=to_utc("2026-01-01T01:00", PARIS), end=to_utc("2026-01-02T01:00", PARIS))
    assert i.key == "interval:2026-01-01T00:00:00+00:00"


# -- the fast paths agree with croniter and with the general walk ------------------------------

_PLAIN_EXPRS = ["0 * * * *", "0 0 * * *", "0 0 * * 0", "0 0 1 * *", "0 0 1 1 *", "30 2 * * *",
                "*/15 9-17 * * 1-5", "0 0 1,15 * mon", "0 0 * jan,jul sun", "0 0 29 2 *",
                "0 0 13 * 5", "59 23 31 12 *", "0 0 31 * *", "1-5/2 */7 */3 */5 2-6",
                "0 0 * * 5-7", "0 9 1-7 * 1"]


def _spread_times(n: int, seed: int) -> list[datetime]:
    """Deterministic naive times over ten years, some on whole minutes, some just off."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = datetime(2020, 1, 1) + timedelta(seconds=rng.randrange(10 * 365 * 86400))
        out.append(t + rng.choice([timedelta(0), timedelta(microseconds=1),
                                   timedelta(seconds=59, microseconds=999_999)]))
    return out


@pytest.mark.parametrize("expr", _PLAIN_EXPRS)
def test_plain_cron_fields_step_exactly_like_croniter(expr: str) -> None:
    from croniter import croniter

    from cadenza.triggers.wallclock import FieldsWalk, cron_fields

    fields = cron_fields(expr)
    assert fields is not None
    for t in _spread_times(60, seed=len(expr)):
        ours, theirs = FieldsWalk(expr, fields, t), croniter(expr, t)
        assert [ours.get_next() for _ in range(3)] == [theirs.get_next(datetime)
                                                       for _ in range(3)], t
        ours, theirs = FieldsWalk(expr, fields, t), croniter(expr, t)
        assert [ours.get_prev() for _ in range(3)] == [theirs.get_prev(datetime)
                                                       for _ in range(3)], t


@pytest.mark.parametrize("expr", ["0 0 L * *", "0 0 * * 5#2", "0 0 1W * *", "0 0 ? * *"])
def test_croniter_extensions_keep_the_croniter_path(expr: str) -> None:
    from croniter import croniter

    s = CronSchedule(expr, "UTC")
    assert s._fields is None
    t = datetime(2026, 2, 10, 12, tzinfo=UTC)
    assert s.next_after(t) == croniter(expr, t).get_next(datetime).replace(tzinfo=UTC)


def _general(expr: str, tz: str) -> CronSchedule:
    """The same schedule with the fast paths off: the general DST walk only (over the
    same cron fields, which the test above holds to croniter's answers)."""
    s = CronSchedule(expr, tz)
    s._fast_next = lambda t: None  # type: ignore[method-assign]
    s._fast_prev = lambda t: None  # type: ignore[method-assign]
    return s


@pytest.mark.parametrize("tz", [PARIS, NY, "UTC", "Australia/Lord_Howe", "America/Santiago",
                                "Etc/GMT-3"])
@pytest.mark.parametrize("expr", ["@hourly", "@daily", "30 2 * * *", "*/20 * * * *",
                                  "15 1-3 * * 0", "0 2,3 * * *", "30 2 * * 0", "@monthly"])
def test_fast_paths_answer_like_the_general_walk_around_dst_changes(expr: str, tz: str) -> None:
    fast, general = CronSchedule(expr, tz), _general(expr, tz)
    changes = [datetime(2026, 3, 8, 7), datetime(2026, 3, 29, 1), datetime(2026, 4, 5, 3),
               datetime(2026, 9, 6, 4), datetime(2026, 10, 4, 16), datetime(2026, 10, 25, 1),
               datetime(2026, 11, 1, 6), datetime(2026, 12, 31, 23, 30)]
    for change in changes:
        base = change.replace(tzinfo=UTC)
        # Every 4 h 7 min from 3 days before to 3 days after.
        for k in range(-17, 18):
            t = base + timedelta(minutes=247 * k)
            assert fast.next_after(t) == general.next_after(t), (t, "next")
            assert fast.prev_at_or_before(t) == general.prev_at_or_before(t), (t, "prev")
        start = base - timedelta(days=3)
        assert (list(itertools.islice(fast.iter_after(start), 40))
                == list(itertools.islice(general.iter_after(start), 40)))


def test_weekly_at_a_repeated_time_just_outside_the_window_is_its_first_occurrence() -> None:
    # 02:30 on Sunday 2026-10-25 happens twice in Paris; fixed-time rule: the first (CEST).
    s = CronSchedule("30 2 * * 0", PARIS)
    t = datetime(2026, 10, 27, 1, 10, tzinfo=UTC)  # two days and 10 minutes after the change
    assert local(s.prev_at_or_before(t), PARIS) == "2026-10-25 02:30+0200"


@pytest.mark.parametrize(("schedule", "catchup"), [("@hourly", False), ("@hourly", True),
                                                    ("30 2 * * *", True),
                                                    (timedelta(minutes=90), False)])
def test_the_remembered_next_interval_changes_no_due_interval(schedule: Any, catchup: bool
                                                              ) -> None:
    def timetable() -> Timetable:
        sched = schedule_of(schedule, PARIS, "2026-03-27")
        assert sched is not None
        return Timetable(sched, start=to_utc("2026-03-27", PARIS), catchup=catchup,
                         timezone=PARIS)

    # One timetable driven like the scheduler drives it (next_due_after, then due at that
    # time), against a fresh timetable asked the same question each time.
    tt, after = timetable(), None
    now = to_utc("2026-03-28T00:00:30", PARIS)
    for i in range(60):  # across the spring-forward night
        got = tt.due(now, after=after, limit=5)
        assert got == timetable().due(now, after=after, limit=5), now
        if got:
            after = got[-1].start
            due_at = tt.next_due_after(got[-1])
        else:
            due_at = tt.next_due_at(after, now)
        assert due_at is not None
        # Now and then the scheduler was away for hours: several intervals ended since.
        now = max(now, due_at) + timedelta(seconds=30, hours=5 if i % 7 == 3 else 0)
