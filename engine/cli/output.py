"""Formatting for the ``provision`` CLI: attempt details, timelines, tables and JSON, secrets redacted.

Everything the CLI shows goes through here so that redaction happens in one place: configuration
values (and any nested dict value) whose key mentions a secret, token, password, verifier or code are
replaced by ``********``. The consent URL of a REDIRECTED attempt is shown on purpose: the user has to
open it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from engine.security.crypto import scrub, secret_values
from engine.security.masking import MASK, is_secret_key
from persistence.quarantine import UNREADABLE
from states.attempt import Attempt, HistoryEntry
from states.model import TERMINAL, State

# Columns are only ever appended (issue 10/12 customer and health, issue 11/12 retries, last error
# and next retry): scripts that cut the first columns keep working.
LIST_COLUMNS = ("id", "element", "flow", "state", "name", "created", "updated", "failure_reason",
                "retries", "last_error", "next_retry", "customer", "health")


def redact(value: Any) -> Any:
    """A copy of ``value`` where every mapping entry with a secret-looking key is masked."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(str(k)) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with ``Z`` (``2026-11-30T01:58:27.512000Z``; microseconds kept for paging), or None."""
    if when is None:
        return None
    return when.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def human_time(when: datetime | None) -> str:
    """``2026-11-30T01:58:27Z`` (UTC, the CLI's one timestamp format), or ``-``."""
    if when is None:
        return "-"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(data: Any) -> str:
    """Stable, indented JSON for ``--json`` output."""
    return json.dumps(data, indent=2, sort_keys=False, default=str)


# --- one attempt -----------------------------------------------------------------------------------


def attempt_dict(attempt: Attempt, history: Sequence[HistoryEntry],
                 redirect_url: str | None) -> dict[str, Any]:
    """The ``show --json`` document (DESIGN §10), secrets redacted."""
    data: dict[str, Any] = {
        "id": attempt.id,
        "state": attempt.state.value,
        "element": attempt.element_key,
        "flow": attempt.flow.value,
        "name": attempt.name,
        "tags": list(attempt.tags),
        "idempotency_key": attempt.idempotency_key,
        "customer": attempt.customer,
        "health": attempt.health,
        "health_reason": attempt.health_reason,
        "last_check_at": iso(attempt.last_check_at),
        "redirect_url": redirect_url if attempt.state is State.REDIRECTED else None,
        "instance_id": attempt.instance_id,
        "realm_id": attempt.realm_id,
        "failure_reason": attempt.failure_reason,
        "last_error": attempt.last_error,
        "failures": attempt.failures,
        "configuration": attempt.config,
        "created_at": iso(attempt.created_at),
        "updated_at": iso(attempt.updated_at),
        "next_run_at": iso(attempt.next_run_at),
        "deadline_at": iso(attempt.deadline_at),
        "next_renewal_at": iso(attempt.next_renewal_at),
        "renewals": attempt.renewals,
        "renewal_owner": attempt.owner.value,
        "history": [h.as_dict() for h in history],
    }
    # redirect_url is shown on purpose (the user must open it); everything else goes through redact().
    url = data.pop("redirect_url")
    # Then every known secret value is masked wherever it appears (e.g. echoed in an error message).
    out: dict[str, Any] = scrub(redact(data), secret_values(attempt.secrets))
    out["redirect_url"] = url
    return out


def describe_error(error: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """(one-line message, hint) of a stored error dict (``ProvisionError.to_dict()`` shape)."""
    if not error:
        return "-", None
    err = redact(error)
    parts = [str(err.get("message") or err.get("kind") or "error")]
    if err.get("status") is not None:
        parts.insert(0, f"HTTP {err['status']}")
    if err.get("endpoint"):
        parts.insert(0, str(err["endpoint"]))
    if err.get("provider_message"):
        parts.append(f"provider: {err['provider_message']}")
    if err.get("request_id"):
        parts.append(f"requestId {err['request_id']}")
    kind = f"[{err['kind']}] " if err.get("kind") else ""
    return kind + " - ".join(parts), err.get("hint")


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def format_timeline(history: Sequence[HistoryEntry]) -> list[str]:
    """Timeline lines: trigger, from -> to, at, duration, outcome, tries, then error and hint."""
    if not history:
        return ["  (no transitions yet)"]
    rows = [(f"{h.seq}.", h.trigger, f"{h.source} -> {h.dest}", human_time(h.at), _duration(h.duration_ms),
             h.outcome + (f" ({h.note})" if h.note else ""), f"tries={h.tries}") for h in history]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for h, row in zip(history, rows, strict=True):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if h.error:
            message, hint = describe_error(h.error)
            lines.append(f"      error: {message}")
            if hint:
                lines.append(f"      hint:  {hint}")
    return lines


def format_attempt(attempt: Attempt, history: Sequence[HistoryEntry], redirect_url: str | None) -> str:
    """The human form of ``provision show``."""
    config = ", ".join(f"{k}={v}" for k, v in sorted(redact(attempt.config).items())) or "-"
    fields: list[tuple[str, str]] = [
        ("id", attempt.id),
        ("element", attempt.element_key),
        ("flow", attempt.flow.value),
        ("name", attempt.name),
        ("customer", attempt.customer or "-"),
        ("state", attempt.state.value),
        ("tags", ", ".join(attempt.tags) or "-"),
        ("configuration", config),
        ("created", human_time(attempt.created_at)),
        ("updated", human_time(attempt.updated_at)),
        ("next run", human_time(attempt.next_run_at)),
        ("instance_id", attempt.instance_id or "-"),
        ("failure_reason", attempt.failure_reason or "-"),
    ]
    if attempt.realm_id:  # the provider account (QuickBooks company) the callback named
        fields.append(("realm_id", attempt.realm_id))
    if attempt.state not in TERMINAL:  # a stale callback deadline on a finished attempt only confuses
        fields.insert(11, ("deadline", human_time(attempt.deadline_at)))
    if attempt.idempotency_key:
        fields.insert(7, ("idempotency_key", attempt.idempotency_key))
    if attempt.last_check_at is not None:
        fields.append(("health", f"{_health_cell(attempt)} (checked {human_time(attempt.last_check_at)})"))
    fields.append(("renewal owner", attempt.owner.value))
    if attempt.next_renewal_at is not None:
        fields.append(("next renewal", human_time(attempt.next_renewal_at)))
    if attempt.last_error:
        message, hint = describe_error(attempt.last_error)
        fields.append(("last_error", message))
        if hint:
            fields.append(("hint", hint))
    if attempt.state is State.REDIRECTED and redirect_url:
        fields.append(("consent URL", redirect_url))
        fields.append(("next", "open the consent URL, then deliver the redirect with "
                               "`provision callback URL` "
                               "(or let `provision serve` receive it)"))
    width = max(len(k) for k, _ in fields)
    needles = secret_values(attempt.secrets)
    # The consent URL is shown on purpose (for OAuth1 it carries the request token); all else is scrubbed.
    lines = [f"{k.ljust(width)}  {v if k == 'consent URL' else scrub(v, needles)}" for k, v in fields]
    lines.append("timeline:")
    lines.extend(scrub(format_timeline(history), needles))
    return "\n".join(lines)


# --- lists -----------------------------------------------------------------------------------------


def attention(attempt: Attempt) -> str | None:
    """Why the attempt needs an operator although it did not fail: its secrets are unreadable."""
    kind = (attempt.last_error or {}).get("kind")
    return f"{UNREADABLE} (needs operator action)" if kind == UNREADABLE else None


def list_row(attempt: Attempt) -> tuple[str, ...]:
    """The table row of one attempt (columns of ``LIST_COLUMNS``)."""
    # A retrying attempt must not look healthy (issue 18): its failures, error kind and next try.
    retrying = attempt.failures > 0 and attempt.state not in TERMINAL
    error = redact(attempt.last_error or {})
    return (attempt.id, attempt.element_key, attempt.flow.value, attempt.state.value, attempt.name,
            human_time(attempt.created_at), human_time(attempt.updated_at),
            attempt.failure_reason or attention(attempt) or "-", str(attempt.failures),
            str(error.get("kind") or "-")[:40] if attempt.last_error else "-",
            human_time(attempt.next_run_at) if retrying else "-",
            attempt.customer or "-", _health_cell(attempt))


def _health_cell(attempt: Attempt) -> str:
    if attempt.health is None:
        return "-"
    return f"{attempt.health}:{attempt.health_reason}" if attempt.health_reason else attempt.health


def _clean(cell: str) -> str:
    # Names are printable (validated) but tabs/newlines would still break column parsing downstream.
    return cell.replace("\t", " ").replace("\n", " ")


def format_counts(counts: Mapping[str, int]) -> str:
    """``FAILED=1 PROVISIONED=2`` in machine order; ``none`` when empty."""
    order = [s.value for s in State]
    items = sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    return " ".join(f"{k}={v}" for k, v in items) or "none"


def format_list(attempts: Iterable[Attempt], counts: Mapping[str, int], *, tty: bool) -> str:
    """``provision list`` output.

    On a terminal: aligned columns, then a counts line. Piped: tab-separated rows with a header
    (for ``cut``/``awk``), then a final ``counts`` line whose fields are tab-separated ``STATE=N``.
    """
    rows = [LIST_COLUMNS] + [tuple(_clean(c) for c in list_row(a)) for a in attempts]
    total = sum(counts.values())
    if not tty:
        lines = ["\t".join(r) for r in rows]
        lines.append("\t".join(["counts", *format_counts(counts).split(" ")]))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(LIST_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no attempts match)")
    lines.append("")
    lines.append(f"counts ({total} attempts): {format_counts(counts)}")
    return "\n".join(lines)


def list_dict(attempts: Iterable[Attempt], counts: Mapping[str, int]) -> dict[str, Any]:
    """``provision list --json``."""
    return {
        "attempts": [
            {"id": a.id, "element": a.element_key, "flow": a.flow.value, "state": a.state.value,
             "name": a.name,
             "tags": list(a.tags), "created_at": iso(a.created_at), "updated_at": iso(a.updated_at),
             "failure_reason": a.failure_reason, "instance_id": a.instance_id, "customer": a.customer,
             "health": a.health, "health_reason": a.health_reason, "last_check_at": iso(a.last_check_at),
             # added by issue 18 (existing keys unchanged): retries, last error, next run
             "failures": a.failures, "next_run_at": iso(a.next_run_at),
             "last_error": scrub(redact(a.last_error), secret_values(a.secrets)) if a.last_error else None,
             "needs_attention": attention(a)}
            for a in attempts
        ],
        "counts": dict(counts),
    }
