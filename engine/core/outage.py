"""What a worker says when a pass of its loop fails (issue 16 item 6): one line per database error.

A database restart fails every pass of every worker until the server is back, several times a
second; a 50-line traceback each time buries the one fact that matters. A database error
(``sqlalchemy.exc.DBAPIError``: the server went away, refused the connection, ended the session,
timed out a lock) is logged as one line naming its class and the driver's first line of text,
with the traceback at DEBUG (``provision -vv``). Anything else is unexpected and keeps its
traceback. The driver's text names host, port, user and database at most, never a password, and
the log handlers' redaction still applies; the SQL and its parameters are left out.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa

MAX_DETAIL = 200


def database_error(exc: BaseException) -> str | None:
    """``Class: first line of the driver's message`` for a database error; None for anything else."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    orig = exc.orig if exc.orig is not None else exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    detail = lines[0][:MAX_DETAIL] if lines else "no message"
    return f"{type(orig).__name__}: {detail}"


def log_failure(log: logging.Logger, what: str, exc: BaseException, *, failures: int, retry_s: float) -> None:
    """Log that ``what`` failed (the ``failures``-th time in a row) and is retried in ``retry_s`` seconds."""
    described = database_error(exc)
    if described is None:
        log.error("%s failed (%d in a row); retrying in %.1f s", what, failures, retry_s, exc_info=exc)
        return
    log.warning("%s failed (%d in a row): database error %s; retrying in %.1f s",
                what, failures, described, retry_s)
    log.debug("%s failed: the traceback", what, exc_info=exc)
