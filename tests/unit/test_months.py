"""The month rule (``months.resolve_month``) for every way of starting a run, in any timezone."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from include.segmentation.months import month_of_date, parse_month, resolve_month


def _at(text: str, tz: str = "UTC") -> datetime:
    return pd.Timestamp(text, tz=tz).to_pydatetime()


NOW = _at("2026-12-01 22:50")  # a manual run's run_after: when it was triggered


@pytest.mark.parametrize(
    ("logical_date", "run_after", "month"),
    [
        # scheduled run and backfill: logical date = the month's first day, due when the month ends
        (_at("2013-12-01"), _at("2014-01-01"), "2013-12"),
        (_at("2013-08-01"), NOW, "2013-08"),  # backfilled years later
        # CLI `dags trigger --logical-date 2013-10-01T00:00:00+00:00` (run_after = now)
        (_at("2013-10-01"), NOW, "2013-10"),
        # `dags test DAG 2013-12-01` under other default timezones: midnight local is the 1st
        (_at("2013-12-01", "Europe/Berlin"), NOW, "2013-12"),
        (_at("2013-12-01", "Asia/Tokyo"), NOW, "2013-12"),
        (_at("2013-12-01", "Pacific/Kiritimati"), NOW, "2013-12"),  # UTC+14
        (_at("2013-12-01", "America/Los_Angeles"), NOW, "2013-12"),
        (_at("2013-12-01", "Etc/GMT+12"), NOW, "2013-12"),  # UTC-12
        # a date inside a month names that month
        (_at("2013-10-15 13:00"), NOW, "2013-10"),
        (_at("2013-10-31 09:00"), NOW, "2013-10"),
    ],
)
def test_the_logical_date_names_the_month(logical_date, run_after, month):
    assert resolve_month(None, logical_date, run_after).month == pd.Period(month, "M")


def test_a_logical_date_in_a_month_not_over_takes_the_last_complete_month():
    # the trigger form's default logical date is now: an empty target_month means last month
    got = resolve_month(None, NOW, NOW)
    assert got.month == pd.Period("2026-11", "M")
    assert "not over yet" in got.reason
    # a scheduled run is never early: its month ends at run_after
    assert resolve_month(None, _at("2026-11-01"), _at("2026-12-01")).month == pd.Period("2026-11", "M")


def test_no_logical_date_takes_the_last_complete_month_before_the_run():
    got = resolve_month(None, None, _at("2014-01-15 09:00"))
    assert got == (pd.Period("2013-12", "M"), "no logical date: last complete month before the run")
    # run_after late on the last day, in a timezone ahead of UTC, is still read in UTC
    assert resolve_month(None, None, _at("2014-01-01 00:30", "Europe/Berlin")).month == pd.Period("2013-11", "M")


def test_target_month_wins_and_says_so():
    assert resolve_month("2012-03", _at("2013-12-01"), NOW) == (pd.Period("2012-03", "M"), "target_month Param")


def test_the_reason_names_the_logical_date_in_utc():
    assert resolve_month(None, _at("2013-12-01", "Asia/Tokyo"), NOW).reason == "logical date 2013-11-30T15:00:00Z"


def test_snapping_stops_at_fourteen_hours():
    assert month_of_date(_at("2013-11-30 10:00")) == pd.Period("2013-12", "M")  # 14 h before
    assert month_of_date(_at("2013-11-30 09:59")) == pd.Period("2013-11", "M")
    assert month_of_date(_at("2013-12-01 14:00")) == pd.Period("2013-12", "M")
    assert month_of_date(datetime(2013, 11, 30, 12)) == pd.Period("2013-12", "M")  # naive = UTC


@pytest.mark.parametrize("bad", ["2013-13", "13-12", "2013/12", "2013-1", "december"])
def test_bad_target_month_is_named(bad):
    with pytest.raises(ValueError, match="target_month"):
        parse_month(bad)
    with pytest.raises(ValueError, match="target_month"):
        resolve_month(bad, None, NOW)


def test_nothing_to_go_on_is_an_error():
    with pytest.raises(ValueError, match="cannot resolve"):
        resolve_month(None, None, None)


def test_a_logical_date_without_run_after_names_its_month():
    assert resolve_month(None, datetime(2013, 12, 1, tzinfo=UTC), None).month == pd.Period("2013-12", "M")


@pytest.mark.parametrize("bad", ["0001-01", "9999-12", "0000-01", "２０１３-12", "٢٠١٣-12"])
def test_out_of_range_and_non_ascii_years_are_refused(bad):
    with pytest.raises(ValueError, match="target_month"):
        parse_month(bad)
