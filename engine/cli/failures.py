"""How the CLI reports a failure: ``provision: error: ...`` on stderr, or JSON under ``--json``.

Under ``--json`` the error is one JSON document on **stderr** (stdout stays for results, so a
script that parses stdout never mistakes an error for one):
``{"error": {"kind": "...", "message": "...", "field": "--db" | null, "hint": "..." | null}}``.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from engine.errors import ProvisionError
from engine.security.redaction import redact_text

PROG = "provision"


def error_document(exc: BaseException | None, message: str) -> dict[str, Any]:
    """The ``{"error": {...}}`` document of ``exc`` (or of a bare ``message``), secrets masked."""
    kind = "error"
    hint = field = None
    text = message
    if isinstance(exc, ProvisionError):
        kind, hint, text = exc.kind, exc.hint, exc.message
        field = getattr(exc, "field", None)
    elif exc is not None:
        kind = "unexpected"
    return {"error": {"kind": kind, "message": redact_text(text), "field": field,
                      "hint": redact_text(hint) if hint else None}}


def report(message: str, *, exc: BaseException | None = None, as_json: bool = False) -> None:
    """Print one failure on stderr, as a line or (``as_json``) as the error document."""
    if as_json:
        print(json.dumps(error_document(exc, message)), file=sys.stderr, flush=True)
    else:
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
