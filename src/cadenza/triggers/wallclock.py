"""Cron on a naive wall clock, in plain integer arithmetic, and where a zone's UTC offset is
steady: the fast paths of `cron.CronSchedule`.

What belongs here: `cron_fields` (a plain 5-field expression expanded once), `FieldsWalk`
(croniter's iterator interface over it), the zone-offset helpers the fast paths rely on.
What does not: the DST rule and the schedules themselves (`cron.py`). Pure: no clock reads.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)

# -- cron fields on a naive wall clock ---------------------------------------------------------
#
# croniter re-parses its expression for every iterator and steps with dateutil's relativedelta:
# ~200 us per step and ~200 us per iterator. A tick where 1,000 pipelines fall due at once
# takes 3 iterators and 7 steps per pipeline, which was 1.4 of the 2.2 s such a tick cost
# (SQLite, 2 slow cores). `CronFields` parses once per expression (croniter's own `expand`,
# so the accepted syntax and its meaning are croniter's) and steps in plain integer
# arithmetic: ~3 us a step. Expressions using croniter's extensions (L, W, #, ?, H) keep
# the croniter path. tests/unit/test_cron.py checks both against croniter.

_PLAIN_FIELD = re.compile(r"[0-9*/,\-]+")
_NAMED_FIELD = re.compile(r"[0-9a-z*/,\-]+")  # month and day-of-week fields: jan, mon, ...
_NAMES = frozenset({"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                    "nov", "dec", "sun", "mon", "tue", "wed", "thu", "fri", "sat"})
# croniter gives up after 50 years without a match ("0 0 31 2 *"); so do we, then let
# croniter raise its own error.
_SEARCH_DAYS = 50 * 366


@dataclass(frozen=True, slots=True)
class CronFields:
    """A plain 5-field expression, expanded: matching wall-clock minutes, stepped forwards
    and backwards with strict bounds (croniter's `get_next`/`get_prev` semantics)."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int] | None  # None: every day of the month ('*')
    months: tuple[int, ...]
    dows: frozenset[int] | None  # cron numbering, 0 = Sunday; None: '*'

    def day_matches(self, d: date) -> bool:
        doms, dows = self.doms, self.dows
        if doms is None:
            return dows is None or (d.weekday() + 1) % 7 in dows
        if dows is None:
            return d.day in doms
        # Both restricted: either may match (croniter's day_or=True, as Vixie cron).
        return d.day in doms or (d.weekday() + 1) % 7 in dows

    # Wall times are naive, or carry the tzinfo they came with as a label (the fast paths
    # of CronSchedule pass UTC-labelled wall times to spare a `replace`, which costs
    # ~1.5 us on CPython 3.11: more than a whole `datetime(...)` call).

    def next_after(self, t: datetime) -> datetime | None:
        """The first matching minute strictly after the wall time `t`."""
        tz = t.tzinfo
        base = datetime(t.year, t.month, t.day, t.hour, t.minute, tzinfo=tz) + _MINUTE
        day = base.date()
        h, m = base.hour, base.minute
        hours, minutes, months = self.hours, self.minutes, self.months
        stop = day.toordinal() + _SEARCH_DAYS
        while day.toordinal() <= stop:
            if day.month not in months:
                i = bisect_right(months, day.month)
                day = (date(day.year, months[i], 1) if i < len(months)
                       else date(day.year + 1, months[0], 1))
                h = m = 0
                continue
            if self.day_matches(day):
                i = bisect_left(hours, h)
                if i < len(hours):
                    hh = hours[i]
                    j = bisect_left(minutes, m) if hh == h else 0
                    if j < len(minutes):
                        return datetime(day.year, day.month, day.day, hh, minutes[j], tzinfo=tz)
                    if i + 1 < len(hours):
                        return datetime(day.year, day.month, day.day, hours[i + 1], minutes[0],
                                        tzinfo=tz)
            day += _DAY
            h = m = 0
        return None

    def prev_before(self, t: datetime) -> datetime | None:
        """The last matching minute strictly before the wall time `t`."""
        tz = t.tzinfo
        base = datetime(t.year, t.month, t.day, t.hour, t.minute, tzinfo=tz)
        if base == t:
            base -= _MINUTE
        day = base.date()
        h, m = base.hour, base.minute
        hours, minutes, months = self.hours, self.minutes, self.months
        stop = day.toordinal() - _SEARCH_DAYS
        while day.toordinal() >= stop:
            if day.month not in months:
                i = bisect_left(months, day.month)
                y, mo = (day.year, months[i - 1]) if i > 0 else (day.year - 1, months[-1])
                day = (date(y + 1, 1, 1) if mo == 12 else date(y, mo + 1, 1)) - _DAY
                h, m = 23, 59
                continue
            if self.day_matches(day):
                i = bisect_right(hours, h) - 1
                if i >= 0:
                    hh = hours[i]
                    j = bisect_right(minutes, m) - 1 if hh == h else len(minutes) - 1
                    if j >= 0:
                        return datetime(day.year, day.month, day.day, hh, minutes[j], tzinfo=tz)
                    if i > 0:
                        return datetime(day.year, day.month, day.day, hours[i - 1], minutes[-1],
                                        tzinfo=tz)
            day -= _DAY
            h, m = 23, 59
        return None


@lru_cache(maxsize=4096)
def cron_fields(expr: str) -> CronFields | None:
    """The expanded fields of a valid 5-field expression; None when it uses a croniter
    extension (L, W, #, ?, H) that only croniter evaluates."""
    from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

    fields = expr.lower().split()
    if len(fields) != 5 or not all(_PLAIN_FIELD.fullmatch(f) for f in fields[:3]):
        return None
    for f in fields[3:]:
        if not _NAMED_FIELD.fullmatch(f) or any(
                w not in _NAMES for w in re.findall(r"[a-z]+", f)):
            return None
    try:
        expanded, nth = croniter.expand(expr)
    except Exception:  # noqa: BLE001 - croniter's own path reports the problem
        return None
    if nth or any(not isinstance(v, int) for col in expanded for v in col if v != "*"):
        return None
    minute, hour, dom, month, dow = ([] if col == ["*"] else sorted(set(col))
                                     for col in expanded)
    return CronFields(
        minutes=tuple(minute or range(60)),
        hours=tuple(hour or range(24)),
        doms=frozenset(dom) if dom else None,
        months=tuple(month or range(1, 13)),
        dows=frozenset(d % 7 for d in dow) if dow else None,
    )


class FieldsWalk:
    """croniter's iterator interface (`get_next`, `get_prev` from a moving position) over
    `CronFields`; croniter answers where the fast path finds nothing in 50 years."""

    __slots__ = ("_cur", "_expr", "_fields")

    def __init__(self, expr: str, fields: CronFields, start: datetime) -> None:
        self._expr = expr
        self._fields = fields
        self._cur = start

    def get_next(self, _ret_type: Any = datetime) -> datetime:
        nxt = self._fields.next_after(self._cur)
        if nxt is None:
            from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

            nxt = croniter(self._expr, self._cur).get_next(datetime)
        self._cur = nxt
        return nxt

    def get_prev(self, _ret_type: Any = datetime) -> datetime:
        prv = self._fields.prev_before(self._cur)
        if prv is None:
            from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

            prv = croniter(self._expr, self._cur).get_prev(datetime)
        self._cur = prv
        return prv


def offset_spread(tz: ZoneInfo, t: datetime) -> tuple[timedelta, timedelta]:
    """(min, max) UTC offset of `tz` within two days of `t` (DST changes are weeks apart)."""
    offs = [(t + d).astimezone(tz).utcoffset() or timedelta(0)
            for d in (-2 * _DAY, timedelta(0), 2 * _DAY)]
    return min(offs), max(offs)


# Zones that have one UTC offset for all time (tzdata gives them no transitions).
_FIXED_ZONE = re.compile(r"(Etc/)?(UTC|UCT|GMT|GMT0|GMT[+-]0|Zulu|Universal|Greenwich)"
                         r"|Etc/GMT[+-]\d{1,2}")


def fixed_offset(tz: ZoneInfo) -> timedelta | None:
    """The offset of a zone that never changes it, else None."""
    if tz.key is None or not _FIXED_ZONE.fullmatch(tz.key):
        return None
    return datetime(2000, 1, 1, tzinfo=tz).utcoffset() or timedelta(0)


@lru_cache(maxsize=1024)
def _calm_spans(tz: ZoneInfo, year: int) -> tuple[tuple[datetime, ...], tuple[datetime, ...],
                                                  tuple[timedelta, ...]]:
    """(starts, ends, offsets): the spans of `year` (and a few days around it) over which
    `tz` keeps one UTC offset, from one sample a day. An offset change lies strictly
    between two spans, so within a span the offset is certain (assuming, like
    `offset_spread`, that a zone never changes twice within a day)."""
    first = datetime(year, 1, 1, tzinfo=UTC) - 3 * _DAY
    days = [first + i * _DAY for i in range(372)]
    offs = [d.astimezone(tz).utcoffset() or timedelta(0) for d in days]
    starts: list[datetime] = []
    ends: list[datetime] = []
    values: list[timedelta] = []
    for d, off in zip(days, offs, strict=True):
        if values and values[-1] == off:
            ends[-1] = d
        else:
            starts.append(d)
            ends.append(d)
            values.append(off)
    return tuple(starts), tuple(ends), tuple(values)


def calm_offset(tz: ZoneInfo, t: datetime) -> timedelta | None:
    """The UTC offset of `tz` when it is the same from t - 2 days to t + 2 days, else None
    (~1 us against ~4 us for `offset_spread`'s three conversions)."""
    starts, ends, values = _calm_spans(tz, t.year)
    i = bisect_right(starts, t - 2 * _DAY) - 1
    if i >= 0 and t + 2 * _DAY <= ends[i]:
        return values[i]
    return None
