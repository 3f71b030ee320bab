"""How the CLI reports a failure: ``provision: error: ...`` on stderr, or JSON under ``--json``.

Under ``--json`` the error is one JSON document on **stderr** (stdout stays for results, so a
script that parses stdout never mistakes an error for one):
``{"error": {"kind": "...", "message": "...", "field": "--db" | null, "hint": "..." | null}}``.

The engine's errors speak the Python API (``db_url: ...``, ``replace=True``, ``migrate=True``); this
module renders them in the command line's words: the error's ``field`` becomes its flag (``FLAGS``)
and hints that name API arguments are replaced by the CLI's (``CLI_HINTS``, ``CLI_WORDS``).
"""
from __future__ import annotations

import json
import sys
from typing import Any

from engine.errors import ProvisionError
from engine.security.redaction import redact_text

PROG = "provision"
#: API field (``InvalidInputError.field``) -> the flag that sets it.
FLAGS = {"db_url": "--db", "config": "--config", "element": "--element", "name": "--name", "flow": "--flow",
         "api_key": "--api-key", "api_secret": "--api-secret", "callback_url": "--callback-url",
         "tags": "--tag", "idempotency_key": "--idempotency-key", "callback_wait_s": "--callback-wait",
         "customer": "--customer", "replace": "--replace", "renewal": "--renewal",
         "verify_element": "--offline", "state": "--state", "reason": "--reason", "limit": "--limit",
         "older_than": "--older-than", "newer_than": "--newer-than", "seq": "SEQ", "after": "--after"}
#: Error kind -> the hint in CLI words (replacing the API one).
CLI_HINTS = {
    "missing_configuration": "Pass the missing entries with --config KEY=VALUE (or the matching option, such "
                             "as --api-key or --callback-url) and run start again.",
    "schema_outdated": "Run `provision db upgrade` (with the same --db) first.",
    "attempt_not_found": "List attempts with `provision list`.",
    "unknown_element": "Check the element key (for example quickbooks, sfdc, hubspot); to start without "
                       "asking the platform, pass --offline.",
    "element_check_unavailable": "Retry when the platform answers (check ELEMENTS_BASE_URL and the network), "
                                 "or start without the check: --offline.",
}
#: API phrases in other hints -> their CLI form.
CLI_WORDS = (("replace=True", "--replace"), ("config use_sandbox='true'", "--sandbox-company"),
             ("flow='oauth1' or 'oauth2'", "--flow oauth1 or oauth2"), ("failed=True", "--failed"),
             ("(Engine.list shows whole ids)", "(`provision list` shows whole ids)"))


def cli_field(exc: BaseException | None) -> str | None:
    """The flag of the error's field (the field itself when it has no flag, or is one already)."""
    field = getattr(exc, "field", None)
    return FLAGS.get(field, field) if isinstance(field, str) else None


def cli_parts(exc: ProvisionError) -> tuple[str, str | None]:
    """The error's message and hint in the CLI's words."""
    text, hint = exc.message, CLI_HINTS.get(exc.kind, exc.hint)
    field = getattr(exc, "field", None)
    if isinstance(field, str) and field in FLAGS and text.startswith(f"{field}: "):
        text = f"{FLAGS[field]}: {text[len(field) + 2:]}"
    for api, cli in CLI_WORDS:
        text = text.replace(api, cli)
        hint = hint.replace(api, cli) if hint else hint
    return text, hint


def cli_message(exc: ProvisionError) -> str:
    """``str(exc)`` in the CLI's words (``ApiError`` keeps its own status/endpoint form)."""
    text, hint = cli_parts(exc)
    if type(exc).__str__ is not ProvisionError.__str__:
        return str(exc)
    return text if not hint else f"{text} (hint: {hint})"


def error_document(exc: BaseException | None, message: str) -> dict[str, Any]:
    """The ``{"error": {...}}`` document of ``exc`` (or of a bare ``message``), secrets masked."""
    kind = "error"
    hint = field = None
    text = message
    if isinstance(exc, ProvisionError):
        kind = exc.kind
        text, hint = cli_parts(exc)
        field = cli_field(exc)
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
