"""Several processes opening a new database at once each migrate it, and all succeed.

Workers started together, or ``provision start`` run in parallel against a new SQLite file, each
find the database unmigrated and run the migrations. Alembic used to commit after each migration on
SQLite, so a second process read the version between two of the first's migrations and ran one
again ("duplicate column name", or "expected to match one row when updating '0001' to '0002'").
On PostgreSQL two processes both created the tables. ``persistence/migrations/env.py`` now runs
them in one transaction that waits for any other migrator first.

Each process imports first and says so; then every round's go is written to all of them at once,
so that they start migrating within a millisecond of each other.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from persistence.database import create_db_engine
from persistence.migrate import HEAD, current_revision

PROCESSES = 4

MIGRATOR = """
import sys
from persistence.database import create_db_engine
from persistence.migrate import upgrade
print("ready", flush=True)
for url in sys.argv[1:]:
    sys.stdin.readline()  # the round's go
    db = create_db_engine(url)
    try:
        print(upgrade(db), flush=True)
    finally:
        db.dispose()
"""


def migrate_together(urls: list[str]) -> None:
    """Run PROCESSES migrators on each of ``urls`` in turn, each round started at one moment."""
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATOR, *urls], text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(PROCESSES)]
    try:
        lines: list[list[str]] = [[] for _ in procs]
        for round_ in range(len(urls) + 1):  # "ready", then one revision per round
            if round_:
                for p in procs:
                    assert p.stdin is not None
                    with contextlib.suppress(BrokenPipeError):  # it failed: its stderr says why, below
                        p.stdin.write("go\n")
                        p.stdin.flush()
            for got, p in zip(lines, procs, strict=True):
                assert p.stdout is not None
                got.append(p.stdout.readline().strip())
        errors = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * PROCESSES, errors
    assert lines == [["ready", *[HEAD] * len(urls)]] * PROCESSES, errors
    for url in urls:
        db = create_db_engine(url)
        try:
            assert current_revision(db) == HEAD
            with db.connect() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one() == 1
        finally:
            db.dispose()


def test_processes_migrating_new_sqlite_files_at_once_all_succeed(tmp_path: Path) -> None:
    migrate_together([f"sqlite:///{tmp_path / f'p{i}.db'}" for i in range(3)])


@pytest.mark.postgres
def test_processes_migrating_a_new_postgresql_schema_at_once_all_succeed(pg_schema_url: str) -> None:
    migrate_together([pg_schema_url])
    db = sa.create_engine(pg_schema_url)
    try:
        with db.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM attempts").scalar_one() == 0
    finally:
        db.dispose()
