from datetime import UTC, datetime

import pandas as pd
import pytest

from include.segmentation.months import parse_month, resolve_target_month

UTC = UTC


def test_scheduled_run_takes_the_data_interval_month():
    month = resolve_target_month(
        None,
        datetime(2013, 12, 1, tzinfo=UTC),
        datetime(2014, 1, 1, tzinfo=UTC),
        datetime(2013, 12, 1, tzinfo=UTC),
        datetime(2014, 1, 1, tzinfo=UTC),
    )
    assert month == pd.Period("2013-12", "M")


def test_param_wins_over_the_data_interval():
    month = resolve_target_month(
        "2012-03", datetime(2013, 12, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC), None, None
    )
    assert month == pd.Period("2012-03", "M")


def test_manual_run_without_interval_takes_the_last_complete_month():
    assert resolve_target_month(None, None, None, None, datetime(2014, 1, 15, 9, tzinfo=UTC)) == pd.Period("2013-12")
    # zero-length interval (a trigger timetable): falls back to the logical date
    at = datetime(2014, 3, 1, tzinfo=UTC)
    assert resolve_target_month(None, at, at, at, None) == pd.Period("2014-02", "M")


def test_times_are_read_in_utc():
    # 2014-01-01 00:30 in Berlin is still 2013-12-31 in UTC: the last complete month is November.
    berlin = pd.Timestamp("2014-01-01 00:30", tz="Europe/Berlin").to_pydatetime()
    assert resolve_target_month(None, None, None, berlin, None) == pd.Period("2013-11", "M")


@pytest.mark.parametrize("bad", ["2013-13", "13-12", "2013/12", "2013-1", "december"])
def test_bad_target_month_is_named(bad):
    with pytest.raises(ValueError, match="target_month"):
        parse_month(bad)


def test_nothing_to_go_on_is_an_error():
    with pytest.raises(ValueError, match="cannot resolve"):
        resolve_target_month(None, None, None, None, None)


@pytest.mark.parametrize("bad", ["0001-01", "9999-12", "0000-01", "２０１３-12", "٢٠١٣-12"])
def test_out_of_range_and_non_ascii_years_are_refused(bad):
    with pytest.raises(ValueError, match="target_month"):
        parse_month(bad)


def test_naive_and_aware_interval_bounds_mix():
    month = resolve_target_month(None, datetime(2013, 12, 1), datetime(2014, 1, 1, tzinfo=UTC), None, None)
    assert month == pd.Period("2013-12", "M")
