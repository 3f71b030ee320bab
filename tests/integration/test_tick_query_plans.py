"""The statements every tick runs stay index range scans on SQLite whatever the table holds: a tick of
an idle worker must not read every connection (at 10,000 PROVISIONED connections one such query made
each tick cost 6 ms of CPU instead of 1.3, bench/README.md item 17)."""
from __future__ import annotations

from testkit import TEST_KEY

from engine.wiring import open_repository
from persistence.lifecycle import REPLACED_TO_RETIRE


def test_the_replaced_attempts_lookup_reads_only_replacing_rows(sqlite_url: str) -> None:
    repo = open_repository(sqlite_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    try:
        compiled = REPLACED_TO_RETIRE.compile(dialect=repo.engine.dialect)
        params = [compiled.params[name] for name in compiled.positiontup or ()]
        with repo.engine.connect() as conn:
            plan = [str(row[3]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled.string}",
                                                                 tuple(params))]
        assert any("ix_attempts_replaces" in step for step in plan), plan
        assert not any("ix_attempts_state" in step for step in plan), plan
        assert repo.replaced_to_retire() == []
    finally:
        repo.close()
