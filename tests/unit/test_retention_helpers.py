"""Pure helpers of history retention: the setting, the cutoff and what a row stands for."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.config import history_retention_days_from_env
from engine.errors import InvalidInputError
from persistence.retention import RetentionSchedule, renewals_in, retention_cutoff, summary_note


def test_the_setting_is_whole_days_and_off_by_default() -> None:
    assert history_retention_days_from_env({}) == 0
    assert history_retention_days_from_env({"PROVISION_HISTORY_RETENTION_DAYS": ""}) == 0
    assert history_retention_days_from_env({"PROVISION_HISTORY_RETENTION_DAYS": " 90 "}) == 90
    for bad in ("-1", "90d", "1.5", "many"):
        with pytest.raises(InvalidInputError) as caught:
            history_retention_days_from_env({"PROVISION_HISTORY_RETENTION_DAYS": bad})
        assert "PROVISION_HISTORY_RETENTION_DAYS" in str(caught.value) and "whole number" in str(caught.value)


def test_the_cutoff_is_the_midnight_before_now_minus_keep() -> None:
    now = datetime(2026, 7, 20, 15, 30, tzinfo=timezone.utc)
    assert retention_cutoff(now, timedelta(days=90)) == datetime(2026, 4, 21, tzinfo=timezone.utc)
    other_zone = now.astimezone(timezone(timedelta(hours=-8)))  # 07:30 the same UTC day
    assert retention_cutoff(other_zone, timedelta(days=1)) == datetime(2026, 7, 19, tzinfo=timezone.utc)


def test_what_a_history_row_stands_for() -> None:
    assert renewals_in("renew", "ok", "refresh-token grant") == 1
    assert renewals_in("renew", "summary", summary_note(24)) == 24
    assert summary_note(1) == "daily summary: 1 renewal"
    assert renewals_in("renew", "summary", summary_note(1)) == 1
    assert renewals_in("renew", "ok", summary_note(24)) == 1  # only a summary row's note counts
    assert renewals_in("provision", "ok", None) == 0


def test_a_negative_retention_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_days"):
        RetentionSchedule(None, -1, lambda: datetime.now(timezone.utc))  # type: ignore[arg-type]
