"""The renewal benchmark's loader (``bench/renewal_load.py``) against the current schema, on SQLite and
PostgreSQL: the rows it writes by COPY / executemany are rows the engine reads as PROVISIONED,
engine-owned connections (a column added by a later migration once broke it with a KeyError)."""
from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from testkit import TEST_KEY

from engine.wiring import open_repository
from states import State

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import renewal_load  # noqa: E402
import renewals  # noqa: E402


def test_loaded_connections_are_rows_the_engine_reads(db_url: str) -> None:
    repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        renewal_load.load(repo.engine, 3, 60.0, TEST_KEY, now, processes=1)
        renewal_load.arm(repo.engine, now + timedelta(seconds=5))
        for i in range(3):
            a = repo.get(renewal_load.attempt_id(i))
            assert a is not None and a.state is State.PROVISIONED and a.renewal_owner == "engine"
            assert a.secrets["user_tokens"]["oauth.user.refresh_token"] == f"rt-{i:09d}"
            assert a.next_run_at == now + timedelta(seconds=5 + 20 * i)
            assert a.lease_owner is None and a.realm_id is None
    finally:
        repo.close()


def test_the_retention_probe_measures_a_sample(tmp_path: Path) -> None:
    """``renewals.retention_sizes`` (the history size with and without retention) runs on the current
    schema: it failed after an hour's run when a migration had added a column."""
    sizes = renewals.retention_sizes(f"sqlite:///{tmp_path}/run.db", tmp_path, 20, 2, TEST_KEY)
    assert 0 < sizes["pruned_bytes_per_connection_day"] < sizes["kept_bytes_per_connection_day"], sizes
