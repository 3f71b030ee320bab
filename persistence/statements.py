"""Statements the repository runs, built once with bound parameters (issue 6/6).

SQLAlchemy memoises a statement object's cache key and compiled SQL, so executing a prebuilt
statement with a parameter dict costs a dict lookup; building it per call with literal values
(``.values(**v)``, ``col == value``) cost more CPU than the database work itself (bench/README.md).
Parameter names are prefixed (``g_`` guard, ``v_`` new value, ``h_`` history, ``cb_`` inbox)
because SQLAlchemy reserves bare column names in SET/VALUES clauses.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from persistence.schema import attempts, callbacks, history
from states.attempt import Attempt
from states.model import State

GET = sa.select(attempts).where(attempts.c.id == sa.bindparam("g_id", type_=attempts.c.id.type))
INSERT_ATTEMPT = attempts.insert()
INSERT_HISTORY = history.insert()
INSERT_CALLBACK = callbacks.insert()
UPDATE_CALLBACK = (
    callbacks.update()
    .where(callbacks.c.id == sa.bindparam("g_cb_id", type_=callbacks.c.id.type))
    .values(status=sa.bindparam("v_status", type_=callbacks.c.status.type),
            reason=sa.bindparam("v_reason", type_=callbacks.c.reason.type))
)


def _callbacks_query(by_attempt: bool, by_status: bool) -> Any:
    q = sa.select(callbacks).order_by(callbacks.c.id)
    if by_attempt:
        q = q.where(callbacks.c.attempt_id == sa.bindparam("g_attempt", type_=callbacks.c.attempt_id.type))
    if by_status:
        q = q.where(callbacks.c.status == sa.bindparam("g_status", type_=callbacks.c.status.type))
    return q


# Which of these attempts have callbacks waiting for their redirect (one query for a commit group).
PENDING_FOR = sa.select(callbacks.c.attempt_id).distinct().where(
    callbacks.c.attempt_id.in_(sa.bindparam("g_ids", expanding=True)), callbacks.c.status == "pending")
CALLBACKS_BY = {(a, b): _callbacks_query(a, b) for a in (False, True) for b in (False, True)}
_GUARDED: dict[tuple[frozenset[str], bool, bool], Any] = {}


def guarded_update(keys: frozenset[str], *, leased: bool, count_failure: bool) -> Any:
    """``UPDATE attempts SET <keys> WHERE id, version, state [, lease_owner]`` with bound parameters.

    Parameters: ``g_id``, ``g_version``, ``g_state`` (``g_owner`` when ``leased``) and ``v_<column>``
    for each of ``keys``; ``count_failure`` adds ``failures = failures + 1``. One statement per
    combination, cached (a handful exist: the columns a decision may change are fixed).
    """
    cache_key = (keys, leased, count_failure)
    stmt = _GUARDED.get(cache_key)
    if stmt is None:
        c = attempts.c
        cond = sa.and_(c.id == sa.bindparam("g_id", type_=c.id.type),
                       c.version == sa.bindparam("g_version", type_=c.version.type),
                       c.state == sa.bindparam("g_state", type_=c.state.type))
        if leased:
            cond = sa.and_(cond, c.lease_owner == sa.bindparam("g_owner", type_=c.lease_owner.type))
        values: dict[str, Any] = {k: sa.bindparam("v_" + k, type_=c[k].type) for k in sorted(keys)}
        if count_failure:
            values["failures"] = c.failures + 1
        stmt = _GUARDED[cache_key] = attempts.update().where(cond).values(values)
    return stmt


def guarded_params(attempt: Attempt, owner: str | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters of ``guarded_update`` / ``transition_statement`` for ``attempt`` and ``values``."""
    params: dict[str, Any] = {"g_id": attempt.id, "g_version": attempt.version,
                              "g_state": attempt.state.value}
    if owner is not None:
        params["g_owner"] = owner
    for k, v in values.items():
        params["v_" + k] = v
    return params


_HISTORY_COLS = [c.name for c in history.columns]
_CALLBACK_COLS = ["attempt_id", "received_at", "params", "digest", "status", "reason"]
_TRANSITIONS: dict[tuple[frozenset[str], bool, bool], Any] = {}


def _record_after(moved: Any, *, numbered_by_row: bool, with_callback: bool,
                  inbox_from: Mapping[str, Any] | None = None) -> Any:
    """``INSERT INTO history SELECT ... FROM moved`` (and an inbox INSERT as a CTE), RETURNING seq.

    ``moved`` is an UPDATE ... RETURNING as a CTE: the rows are written only when it returned a
    row. ``numbered_by_row`` takes ``attempt_id`` and ``seq`` from ``moved`` (its ``id`` and
    ``history_seq``) instead of the ``h_`` parameters; ``inbox_from`` gives inbox columns an
    expression instead of their ``cb_`` parameter. RETURNING because SQLAlchemy does not keep
    the rowcount of an INSERT (its cursor is closed); one returned row = applied.
    """
    from_row = {"attempt_id": moved.c.id, "seq": moved.c.history_seq} if numbered_by_row else {}
    row = [from_row.get(n, sa.bindparam("h_" + n, type_=history.c[n].type)) for n in _HISTORY_COLS]
    stmt = history.insert().from_select(_HISTORY_COLS, sa.select(*row).select_from(moved)).returning(
        history.c.seq)
    if with_callback:
        given = inbox_from or {}
        cb = [given.get(n, sa.bindparam("cb_" + n, type_=callbacks.c[n].type)) for n in _CALLBACK_COLS]
        inbox = callbacks.insert().from_select(_CALLBACK_COLS, sa.select(*cb).select_from(moved)).cte("inbox")
        stmt = stmt.add_cte(inbox)
    return stmt


def transition_statement(keys: frozenset[str], *, leased: bool, with_callback: bool) -> Any:
    """PostgreSQL: the guarded UPDATE, the history INSERT (and an inbox INSERT) as ONE statement.

    ``WITH moved AS (UPDATE attempts ... WHERE <guard> RETURNING id) INSERT INTO history SELECT
    ... FROM moved``: the INSERTs select from the UPDATE's RETURNING, so they write a row only when
    the guard matched, and a single statement is atomic on its own. Run in autocommit it is one
    round trip instead of five (BEGIN, UPDATE, INSERT, INSERT, COMMIT). One returned row = applied.
    Extra parameters: ``h_<column>`` for the history row and ``cb_<column>`` for the inbox row.
    """
    cache_key = (keys, leased, with_callback)
    stmt = _TRANSITIONS.get(cache_key)
    if stmt is None:
        moved = guarded_update(keys, leased=leased, count_failure=False).returning(attempts.c.id).cte("moved")
        stmt = _record_after(moved, numbered_by_row=False, with_callback=with_callback)
        _TRANSITIONS[cache_key] = stmt
    return stmt


_APPLY_CALLBACK: dict[tuple[bool, bool], Any] = {}


def callback_received_values() -> dict[str, Any]:
    """The columns an applied callback sets: CALLBACK_RECEIVED, due at once, lease released.

    Parameters: ``g_now`` and ``v_callback_secrets`` (the sealed callback parameters).
    """
    c = attempts.c
    now = sa.bindparam("g_now", type_=c.updated_at.type)
    # Constants are SQL literals, not bound parameters: each parameter costs client CPU to
    # convert and send on every callback (issue 19), and these never change.
    one: Any = sa.literal_column("1")
    zero: Any = sa.literal_column("0")
    null = sa.null()
    return {
        "state": _sql_text(State.CALLBACK_RECEIVED.value), "version": c.version + one,
        "history_seq": c.history_seq + one, "runs": zero, "failures": zero, "updated_at": now,
        "next_run_at": now, "lease_owner": null, "lease_expires_at": null, "failure_reason": null,
        "last_error": sa.bindparam("v_last_error", None, type_=c.last_error.type),  # as transition_write's
        "callback_secrets": sa.bindparam("v_callback_secrets", type_=c.callback_secrets.type),
    }


def apply_callback_update(*, oauth1: bool, pg: bool) -> Any:
    """The UPDATE that applies a callback without reading the row first (``Repository.apply_callback``).

    Guard: the attempt is REDIRECTED with this state nonce, its deadline has not passed, its
    flow is the callback's and (OAuth1) the request token is the one issued. The row moves to
    CALLBACK_RECEIVED, due at once, with the parameters in ``callback_secrets``; ``RETURNING id,
    history_seq`` gives the history row its number. PostgreSQL: a CTE whose history and inbox
    INSERTs select from the UPDATE, so the whole callback is one autocommit statement.
    Parameters: ``g_id``, ``g_nonce``, ``g_flow``, ``g_now`` (``g_token`` for OAuth1),
    ``v_callback_secrets``, ``h_<column>`` and ``cb_<column>`` (PostgreSQL).
    """
    stmt = _APPLY_CALLBACK.get((oauth1, pg))
    if stmt is not None:
        return stmt
    c = attempts.c
    now = sa.bindparam("g_now", type_=c.updated_at.type)
    cond = sa.and_(c.id == sa.bindparam("g_id", type_=c.id.type),
                   c.state == _sql_text(State.REDIRECTED.value),
                   c.state_nonce_hash == sa.bindparam("g_nonce", type_=c.state_nonce_hash.type),
                   sa.or_(c.deadline_at.is_(None), c.deadline_at > now),
                   c.flow == sa.bindparam("g_flow", type_=c.flow.type))
    if oauth1:
        cond = sa.and_(cond, c.request_token_hash == sa.bindparam("g_token", type_=c.request_token_hash.type))
    update = attempts.update().where(cond).values(callback_received_values()).returning(c.id, c.history_seq)
    stmt = update
    if pg:
        moved = update.cte("moved")
        # The inbox row's attempt and ciphertext are the row's id and v_callback_secrets: the
        # same values, not sent twice.
        stmt = _record_after(moved, numbered_by_row=True, with_callback=True, inbox_from={
            "attempt_id": moved.c.id,
            "params": sa.bindparam("v_callback_secrets", type_=callbacks.c.params.type)})
    _APPLY_CALLBACK[(oauth1, pg)] = stmt
    return stmt


def _sql_text(value: str) -> Any:
    """A constant string as an SQL literal (our own enum values: letters and '_', nothing to escape)."""
    if not value.replace("_", "").isalnum():
        raise ValueError(f"not a plain constant: {value!r}")
    return sa.literal_column(f"'{value}'", type_=sa.String())


def _insert_with(table: sa.Table, prefix: str, columns: list[str]) -> Any:
    """``INSERT INTO table (columns) VALUES (:<prefix><column>, ...)`` with typed, named parameters."""
    return table.insert().values({n: sa.bindparam(prefix + n, type_=table.c[n].type) for n in columns})


# SQLite's callback rows, after apply_callback_update's UPDATE ... RETURNING (prepared once per
# database: persistence.prepared).
INSERT_CALLBACK_HISTORY = _insert_with(history, "h_", _HISTORY_COLS)
INSERT_CALLBACK_INBOX = _insert_with(callbacks, "cb_", _CALLBACK_COLS)
# An attempt's plain columns: all but its two sealed blobs (``Repository`` reads and writes them as is).
ATTEMPT_COLUMNS = [c.name for c in attempts.columns if c.name not in ("secrets", "callback_secrets")]
# ``Engine.start``'s one row (prepared once per database): the plain columns and the sealed
# secrets, bound by column name (``Repository._insert_values``); a new attempt has no callback yet.
INSERT_ONE_ATTEMPT = _insert_with(attempts, "", [*ATTEMPT_COLUMNS, "secrets"])
