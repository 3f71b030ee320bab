"""``/healthz`` and ``/readyz``, answered the same way on every listener (receiver and console).

``/healthz`` says the process is up and serving; it touches nothing else. ``/readyz`` asks a
``ReadinessProbe`` whether the process can do its job: by default ``database_probe``, which checks
that the database answers and that its schema is at the newest migration. A probe returns None when
ready, else a short problem statement that names no secret (no URL, no password) because the
receiver's ``/readyz`` is public.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from werkzeug.wrappers import Response

from persistence.migrate import HEAD, current_revision

if TYPE_CHECKING:
    from engine.core.facade import Engine

log = logging.getLogger(__name__)

#: None when ready, else what is wrong (shown on the public ``/readyz``: keep it secret-free).
ReadinessProbe = Callable[[], "str | None"]
HEALTH_PATHS = ("/healthz", "/readyz")


def database_probe(engine: Engine) -> ReadinessProbe:
    """Ready when the engine's database answers and its schema is at the newest migration."""
    def probe() -> str | None:
        try:
            current = current_revision(engine.repo.engine)
        except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
            log.warning("readiness: database unreachable (%s)", type(exc).__name__)
            return "database unreachable"
        if current != HEAD:
            return "database schema is not current (run `provision db upgrade`)"
        return None

    return probe


def _json(status: int, body: dict[str, str]) -> Response:
    response = Response(json.dumps(body) + "\n", status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def health_response(path: str, probe: ReadinessProbe) -> Response | None:
    """The answer to ``/healthz`` or ``/readyz``; None for any other path."""
    if path == "/healthz":
        return _json(200, {"status": "ok"})
    if path == "/readyz":
        problem = probe()
        return _json(200, {"status": "ready"}) if problem is None else _json(
            503, {"status": "not ready", "problem": problem})
    return None
