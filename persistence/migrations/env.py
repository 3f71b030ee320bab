"""Alembic environment: runs migrations on the engine handed over by ``persistence.migrate``.

Every pending migration runs in ONE transaction, which first makes any other migrator wait:
several processes opening a new database at once (workers, or ``provision start`` run in
parallel) each migrate it. Alembic commits after each migration on SQLite, which it takes for a
database without transactional DDL, so a second process read the version between two of the
first's migrations and ran one of them again ("duplicate column name"). SQLite has transactional
DDL; with it, the transaction's ``BEGIN IMMEDIATE`` (``persistence.database``) takes the write lock
before Alembic reads the version. PostgreSQL waits on an advisory lock of the schema instead.
The second process then finds the database at head and does nothing.
"""
from __future__ import annotations

from alembic import context

from persistence.schema import metadata

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      transactional_ddl=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.alembic_version'))")
        context.run_migrations()
    connection.commit()
