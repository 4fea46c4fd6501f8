"""mssql-cdc's `start` times parse the same on 3.10 as on 3.11+ (fromisoformat grew lenient in 3.11)."""

import datetime as dt

import pytest

from providers.mssql_cdc.config import iso_time

UTC = dt.timezone.utc


@pytest.mark.parametrize("text, expected", [
    ("2026-01-02T03:04:05Z", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2026-01-02T03:04:05.5Z", dt.datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
    ("2026-01-02T03:04:05.12+02:00", dt.datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    ("2026-01-02T03:04:05.1234567", dt.datetime(2026, 1, 2, 3, 4, 5, 123456)),
    ("2026-01-02", dt.datetime(2026, 1, 2)),
])
def test_iso_times_parse_as_311_reads_them(text: str, expected: dt.datetime) -> None:
    assert iso_time(text) == expected


def test_not_a_time_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        iso_time("yesterday")
