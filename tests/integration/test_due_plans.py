""""What is due now" must be an index range scan on both backends (issue 3/6 item 6)."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import event
from testkit import TEST_KEY

from engine.wiring import open_repository
from persistence import Repository
from persistence.schema import attempts

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def fill(repo: object, n: int) -> None:
    """n PROVISIONED attempts whose renewals fall over the next year, a few due now."""
    rows = []
    for i in range(n):
        at = T0 + timedelta(minutes=i * 7)
        rows.append(dict(id=str(uuid.uuid4()), element_key="quickbooks", flow="oauth2", name=f"a{i}", tags=[],
                         state="PROVISIONED", version=3, history_seq=3, runs=0, created_at=T0, updated_at=T0,
                         next_run_at=at if i % 10 else None, failures=0, renewals=0))
    with repo.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(attempts.insert(), rows)


def plan(repo: Repository, dialect: str) -> str:
    """EXPLAIN the exact SQL and parameters ``Repository.claim_due`` sent to the driver."""
    if dialect == "postgresql":
        with repo.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE attempts")
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE ATTEMPTS") and "IN (SELECT" in statement.upper():
            sent.append((statement, parameters))

    for db in repo.engines:
        event.listen(db, "before_cursor_execute", capture)
    try:
        repo.claim_due(T0 + timedelta(hours=1), "w", T0 + timedelta(hours=2), 1000)
    finally:
        for db in repo.engines:
            event.remove(db, "before_cursor_execute", capture)
    [(statement, parameters)] = sent
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    with repo.engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + statement, parameters).fetchall()
    return "\n".join(str(r[-1] if dialect == "sqlite" else r[0]) for r in rows)


def test_claim_is_a_range_scan_on_the_due_index(db_url: str) -> None:
    repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        fill(repo, 20_000)
        text = plan(repo, repo.dialect)
        assert "ix_attempts_due" in text, text
        if repo.dialect == "sqlite":
            # A bounded range on the due index, then primary-key lookups; never a full scan.
            assert re.search(
                r"SEARCH attempts USING INDEX ix_attempts_due \(next_run_at>\? AND next_run_at<\?\)", text
            ), text
            assert not re.search(r"^SCAN attempts", text, re.M), text
        else:
            assert (
                "Index Scan using ix_attempts_due" in text or "Index Only Scan using ix_attempts_due" in text
            )
            assert "Seq Scan on attempts" not in text, text
    finally:
        repo.engine.dispose()
