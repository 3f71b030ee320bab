"""Hot statements compiled once per database and sent as driver SQL (issue 19, callback CPU).

``Connection.execute(statement, params)`` costs about as much client CPU as the database round trip
itself for a statement with thirty parameters: a cache-key lookup, ``construct_params`` (every bind
copied and processed), and result set-up (bench/README.md, "callback_cost.py"). The callback path
runs the same few statements on every request, so ``DriverStatement`` does that work once: the
statement is compiled for the engine's dialect, its constants and type processors are kept, and
each call only converts the given values and hands SQL and parameters to ``exec_driver_sql``.
That is still SQLAlchemy's execution path, so connection events, error wrapping and disconnect
handling behave as for any other statement; only the per-call compilation work is skipped.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, cast

import sqlalchemy as sa


class DriverStatement:
    """``statement`` compiled for ``dialect``; ``execute`` binds values by name, as ``execute`` would.

    Bound parameters must be named (``bindparam("g_id")``) unless they carry a fixed value;
    expanding (``IN``) and literal-execute parameters are not supported (they are compiled per
    call by design).
    """

    def __init__(self, statement: Any, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a statement with expanding or literal-execute parameters cannot be prepared")
        self.sql: str = compiled.string
        # Whether it yields rows is known here for DML and SELECT: asking the cursor
        # (``description``) built psycopg's column objects on every call. None (textual SQL):
        # the cursor is asked.
        dml = compiled.isinsert or compiled.isupdate or compiled.isdelete
        self.returns_rows: bool | None = (bool(compiled.effective_returning) if dml
                                          else True if getattr(statement, "is_select", False) else None)
        # SQLite's qmark style: the values in the order of the placeholders (a name may repeat).
        self._pick = _picker(tuple(compiled.positiontup or ())) if compiled.positional else None
        self._names: tuple[str, ...] = tuple(dict.fromkeys(compiled.bind_names.values()))
        self._fixed: dict[str, Any] = {}
        self._processors: dict[str, Callable[[Any], Any] | None] = {}
        for bind, name in compiled.bind_names.items():
            # The processor SQLAlchemy itself applies: the type's dialect implementation (for a
            # TypeDecorator, process_bind_param and then the implementation's own).
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self._processors[name] = processor
            if not bind.required:
                value = bind.effective_value
                self._fixed[name] = processor(value) if processor is not None else value

    def parameters(self, values: Mapping[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        """The driver's parameters for ``values`` by bind name (positional for SQLite's qmark style).

        Names the statement does not use are ignored; a fixed-value bind may be overridden.
        """
        out: dict[str, Any] = {}
        for name in self._names:
            if name in values:
                process = self._processors[name]
                out[name] = values[name] if process is None else process(values[name])
            elif name in self._fixed:
                out[name] = self._fixed[name]
            else:
                raise KeyError(f"no value for the bound parameter {name!r}")
        return self._pick(out) if self._pick is not None else out

    def execute(self, conn: sa.Connection, values: Mapping[str, Any]) -> list[Any]:
        """Run the statement on ``conn`` with ``values`` (by bind name); its rows (none without RETURNING).

        When nobody listens to ``conn``'s cursor events, the SQL goes straight to the driver's cursor
        on ``conn``'s own connection (and transaction): SQLAlchemy's per-statement execution context
        cost as much client CPU as the rest of a callback. Otherwise (a test counting statements,
        an SQL tracer) it goes through ``exec_driver_sql`` so that they see it. Either way a
        driver error is raised as SQLAlchemy's ``DBAPIError`` subclass (``IntegrityError``...),
        and a lost connection is invalidated, as SQLAlchemy's own execution does.
        """
        params = self.parameters(values)
        if (conn.dispatch.before_cursor_execute or conn.dispatch.after_cursor_execute
                or conn.dialect.dispatch.handle_error):
            result = conn.exec_driver_sql(self.sql, params)
            return list(result.all()) if result.returns_rows else []
        dialect = conn.dialect
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None  # a Connection in use holds its DBAPI connection
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(self.sql, params)
            rows = self.returns_rows if self.returns_rows is not None else cursor.description is not None
            return list(cursor.fetchall()) if rows else []
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, dbapi_conn, cursor)
            if lost:
                conn.invalidate(exc)
            # Parameters hidden: they carry sealed secrets and hashes, of no use in a log.
            raise sa.exc.DBAPIError.instance(self.sql, None, exc, dialect.loaded_dbapi.Error,
                                             hide_parameters=True, connection_invalidated=lost,
                                             dialect=dialect) from exc
        finally:
            cursor.close()


def _picker(order: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function from named values to the tuple of ``order`` (itemgetter: one C call)."""
    if len(order) == 1:
        return lambda named: (named[order[0]],)
    if not order:
        return lambda named: ()
    return cast(Callable[[dict[str, Any]], tuple[Any, ...]], operator.itemgetter(*order))
