"""``provision db upgrade`` on SQLite and (with PROVISION_TEST_PG_URL) PostgreSQL; ``provision diagram``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persistence.migrate import head_revision


def test_db_upgrade_sqlite_and_diagram(cli: Any, tmp_path: Path) -> None:
    first, mermaid = cli.many(("db", "upgrade"), ("diagram", "--format", "mermaid"))
    assert first.returncode == 0 and first.stdout.strip() == f"database at revision {head_revision()}"
    assert cli.json("db", "upgrade") == {"revision": head_revision()}  # idempotent
    if mermaid.returncode == 0:  # engine.inspection.render is written by another engineer
        assert "REDIRECTED" in mermaid.stdout and "PROVISIONED" in mermaid.stdout
        target = tmp_path / "machine.mmd"
        written = cli("diagram", "-o", str(target))  # format from the suffix
        assert target.read_text().rstrip("\n") == mermaid.stdout.rstrip("\n")
        assert f"wrote {target}" in written.stderr
    else:
        assert mermaid.returncode == 1 and mermaid.stderr.startswith("provision: error:")


@pytest.mark.postgres
def test_db_upgrade_postgres(cli: Any, pg_schema_url: str) -> None:
    # pg_schema_url (tests/conftest.py) is a fresh schema on PROVISION_TEST_PG_URL; it skips when unset.
    cli.db_url = pg_schema_url
    before = cli("list", expect=1)  # open_engine refuses a PostgreSQL schema that was never upgraded
    assert "provision db upgrade" in before.stderr
    assert cli("db", "upgrade").stdout.strip() == f"database at revision {head_revision()}"
    assert cli.json("list") == {"attempts": [], "counts": {}}  # now the engine accepts it
