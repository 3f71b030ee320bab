"""The bodies of the console's pages: the attempt list, one attempt, confirmations and results.

Each function takes what the page shows (already read through the ``Engine``) and returns markup;
``engine.web.console`` does the reading, the routing and the checks. Secret-free by construction:
stored errors show only kind, message and hint, scrubbed of the attempt's own secret values.

Extension point: ``Panel`` is a titled section of the attempt page. Features that add data to an
attempt (events, webhook deliveries, renewal owner, health checks) add a ``Panel`` to
``DEFAULT_PANELS`` or pass their own tuple to ``ConsoleApp``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from engine.security.crypto import scrub, secret_values
from engine.web.console_actions import Action
from engine.web.console_query import AGES, RETRYING_STATES, VIEWS, AttemptQuery, Page
from engine.web.console_views import (
    diagram,
    facts,
    hidden,
    link,
    select,
    state_badge,
    table,
    text_input,
    when,
)
from states.attempt import Attempt, HistoryEntry
from states.model import FailureReason, State

if TYPE_CHECKING:
    from engine.core.facade import Engine


def is_retrying(a: Attempt) -> bool:
    """In flight but failing: a state that still runs with at least one failed try."""
    return a.state in RETRYING_STATES and a.failures > 0


def error_text(error: Any, needles: set[str], *, with_hint: bool = True) -> Markup:
    """A stored error as ``kind - message`` (and its hint), secrets masked."""
    err = error if isinstance(error, dict) else {}  # only kind/message/hint are ever shown
    text = scrub(" - ".join(str(err[k]) for k in ("kind", "message") if err.get(k)), needles)
    if with_hint and err.get("hint"):
        return Markup('{}<br><span class="hint">{}</span>').format(text, scrub(str(err["hint"]), needles))
    return Markup("{}").format(text)


# --- the list ----------------------------------------------------------------------------------------


def count_cards(counts: Mapping[str, int], attention: Sequence[tuple[str, str, str]]) -> Markup:
    """Counts per state (links to the filtered list), then the "needs attention" counts."""
    cards = [(s.value, str(counts.get(s.value, 0)), {"state": s.value}) for s in State]
    cards.append(("total", str(sum(counts.values())), {}))
    per_state = Markup("").join(
        Markup("<li>{}</li>").format(link("/", Markup("<b>{}</b>{}").format(n, label), **p))
        for label, n, p in cards)
    needs = Markup("").join(
        Markup("<li>{}</li>").format(link("/", Markup("<b>{}</b>{}").format(n, label), view=view))
        for view, label, n in attention)
    return Markup('<h2 id="per-state">Per state</h2><ul class="cards" aria-labelledby="per-state">{}</ul>'
                  '<h2 id="attention">Needs attention</h2><ul class="cards attention" '
                  'aria-labelledby="attention">{}</ul>').format(per_state, needs)


def filter_form(q: AttemptQuery) -> Markup:
    """The GET form of the list's filters; every control has a label."""
    states = [("", "any state")] + [(s.value, s.value) for s in State]
    reasons = [("", "any reason")] + [(r.value, r.value) for r in FailureReason]
    return Markup(
        '<form class="filters" method="get" action="/" role="search" aria-label="Filter attempts">'
        '{}{}{}{}{}{}{}<button type="submit">Apply filters</button> <a href="/">Clear</a></form>').format(
        select("view", "View", list(VIEWS.items()), q.view),
        select("state", "State", states, q.state.value if q.state else ""),
        text_input("element", "Element", q.element, "e.g. quickbooks"),
        text_input("customer", "Customer", q.customer, "e.g. acme-42"),
        select("reason", "Failure reason", reasons, q.reason),
        select("age", "Age", [(k, v[0]) for k, v in AGES.items()], q.age),
        text_input("search", "Search (id prefix or name)", q.search, "3f2a or Acme"))


def attempt_rows(attempts: Sequence[Attempt]) -> list[tuple[Any, ...]]:
    """One table row per attempt (retrying ones are marked)."""
    return [
        (link(f"/attempts/{a.id}", a.id[:8]), a.name, a.element_key, a.flow,
         state_badge(a.state, is_retrying(a)), a.failures,
         a.failure_reason or error_text(a.last_error, secret_values(a.secrets), with_hint=False),
         when(a.next_run_at) if a.state is not State.FAILED else "", when(a.created_at),
         when(a.updated_at))
        for a in attempts
    ]


def list_body(q: AttemptQuery, page: Page, counts: Mapping[str, int],
              attention: Sequence[tuple[str, str, str]], bulk: Sequence[Action]) -> Markup:
    """The attempt list: filters, the live region (counts, table, pager) and the bulk actions."""
    title = VIEWS[q.view].capitalize() if q.view else "Attempts"
    head = ["id", "name", "element", "flow", "state", "failures", "failure / last error", "next run",
            "created", "updated"]
    pager = [link("/", "First page", **q.params())] if q.after else []
    if page.next_after:
        pager.append(link("/", "Next page", **q.params(), after=page.next_after))
    shown = Markup('<p id="shown">{} shown of {} matching, newest first.</p>').format(
        len(page.rows), page.total)
    bulk_links = Markup("").join(
        Markup('<a class="button{}" href="/bulk/{}?{}">{} all matching... (dry run first)</a>').format(
            " danger" if a.danger else "", a.name, _qs(q.params()), a.label) for a in bulk)
    bulk_part = Markup('<h2>Bulk actions</h2><div class="actions">{}</div>').format(bulk_links) if bulk \
        else Markup("")
    return Markup(
        '<h1>{}</h1>{}<p><label><input type="checkbox" id="live-toggle" checked> Live refresh every 5 s'
        '</label></p><div id="live" aria-live="polite">{}<h2>Matching attempts</h2>{}{}<nav class="pager" '
        'aria-label="Pages">{}</nav></div>{}'
    ).format(title, filter_form(q), count_cards(counts, attention), shown,
             table(head, attempt_rows(page.rows), cls="attempts", caption="Attempts"),
             Markup(" ").join(pager), bulk_part)


def _qs(params: Mapping[str, str]) -> str:
    from urllib.parse import urlencode  # noqa: PLC0415 - tiny helper, keeps the import local

    return urlencode(params)


# --- one attempt ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """A titled section of the attempt page; ``render`` returns None to leave it out."""

    title: str
    render: Callable[[Engine, Attempt, Sequence[HistoryEntry]], Markup | None]
    beside_facts: bool = False  # on wide screens, next to the facts (on screen without scrolling)


def timeline(history: Sequence[HistoryEntry], needles: set[str]) -> Markup:
    """Every transition with its tries (failed runs before it), error and note (operator)."""
    rows = [(h.seq, when(h.at), h.trigger, h.source, state_badge(h.dest),
             "" if h.duration_ms is None else f"{h.duration_ms} ms", h.outcome, h.tries,
             error_text(h.error, needles), h.note or "") for h in history]
    head = ["seq", "at", "trigger", "from", "to", "duration", "outcome", "tries", "error", "note"]
    return table(head, rows, cls="timeline", caption="Every transition, in order")


def _path_panel(engine: Engine, a: Attempt, history: Sequence[HistoryEntry]) -> Markup:
    return Markup('<div class="diagram" id="diagram">{}</div><p>{} · {}</p>').format(
        diagram(a, history), link(f"/attempts/{a.id}/diagram.svg", "diagram.svg"),
        link(f"/attempts/{a.id}/diagram.mmd", "diagram.mmd"))


def _workers_panel(engine: Engine, a: Attempt, history: Sequence[HistoryEntry]) -> Markup:
    """The live workers (heartbeats): the one holding this attempt's lease is marked."""
    rows = [(w.worker_id + (" (holds this attempt)" if w.worker_id == a.lease_owner else ""), w.role, w.host,
             w.pid, when(w.started_at), when(w.last_tick_at), ", ".join(w.key_ids), w.leases)
            for w in engine.workers()]
    if not rows:
        return Markup("<p>No live worker: nothing runs due steps until one is started.</p>")
    head = ["worker", "role", "host", "pid", "started", "last tick", "key ids", "leases (last tick)"]
    return table(head, rows, cls="workers", caption="Engines whose heartbeat is recent")


DEFAULT_PANELS: tuple[Panel, ...] = (
    Panel("Path", _path_panel, beside_facts=True),
    Panel("Timeline", lambda engine, a, history: timeline(history, secret_values(a.secrets))),
    Panel("Workers", _workers_panel),
)


def attempt_facts(a: Attempt, consent_url: str | None) -> Markup:
    """What an operator needs first: where it is, what went wrong, what happens next."""
    needles = secret_values(a.secrets)
    items: list[tuple[str, Any]] = [
        ("id", a.id), ("state", state_badge(a.state, is_retrying(a))),
        ("element / flow", f"{a.element_key} / {a.flow}"), ("customer", a.customer or ""),
        ("failures", a.failures),
        ("failure reason", a.failure_reason or ""), ("last error", error_text(a.last_error, needles)),
    ]
    if a.realm_id:  # the provider account the callback named (QuickBooks company)
        items.append(("realm id", a.realm_id))
    if a.last_check_at is not None:  # the last health check (engine.core.health)
        items.append(("health", f"{a.health}{f' ({a.health_reason})' if a.health_reason else ''}, "
                                f"checked {when(a.last_check_at)}"))
    if is_retrying(a):
        items.append(("next retry", when(a.next_run_at)))
    elif a.next_run_at is not None:
        items.append(("next run", when(a.next_run_at)))
    if a.state is State.REDIRECTED:
        # The operator may send this link to the customer; it is shown only on the signed-in console.
        items.append(("consent URL", Markup('<a href="{}" rel="noreferrer">{}</a>').format(
            consent_url, consent_url) if consent_url else "(not stored)"))
        items.append(("consent deadline", when(a.deadline_at)))
    items += [("instance id", a.instance_id or ""), ("renewal owner", a.owner.value),
              ("renewals", a.renewals), ("next renewal", when(a.next_renewal_at)),
              ("tags", ", ".join(a.tags)), ("created", when(a.created_at)), ("updated", when(a.updated_at))]
    return facts(items)


def attempt_body(engine: Engine, a: Attempt, history: Sequence[HistoryEntry], consent_url: str | None,
                 actions: Sequence[Action], panels: Sequence[Panel]) -> Markup:
    """The attempt page: facts, the actions that apply, then each panel."""
    buttons = Markup("").join(
        Markup('<a class="button{}" href="/attempts/{}/{}">{}...</a>').format(
            " danger" if act.danger else "", a.id, act.name, act.label) for act in actions if act.applies(a))
    beside, below = Markup(""), Markup("")
    for panel in panels:
        content = panel.render(engine, a, history)
        if content is not None:
            section = Markup('<section class="panel"><h2>{}</h2>{}</section>').format(panel.title, content)
            if panel.beside_facts:
                beside += section
            else:
                below += section
    return Markup('<nav>{}</nav><h1>Attempt {}</h1><div class="overview"><div><h2>Now</h2>{}<h2>Actions</h2>'
                  '<div class="actions">{}</div></div><div>{}</div></div>{}').format(
        link("/", "all attempts"), a.name, attempt_facts(a, consent_url),
        buttons or Markup('<p class="hint">No action applies in this state.</p>'), beside, below)


# --- confirmations -------------------------------------------------------------------------------------


def confirm_body(title: str, explain: str, action_url: str, fields: Mapping[str, str], button: str,
                 back: str, *, danger: bool, listing: Markup | None = None) -> Markup:
    """A confirmation step: what will happen, a POST form with the CSRF token, and a way back."""
    return Markup('<h1>{}</h1><p>{}</p>{}<form method="post" action="{}">{}<div class="actions">'
                  '<button type="submit" class="{}">{}</button><a class="button secondary" href="{}">'
                  "No, go back</a></div></form>").format(
        title, explain, listing or "", action_url, hidden(fields), "danger" if danger else "", button, back)


def message_body(title: str, text: str, back: str, back_text: str = "Back") -> Markup:
    """A result or error page."""
    return Markup('<h1>{}</h1><p>{}</p><p>{}</p>').format(title, text, link(back, back_text))


def reveal_body(title: str, label: str, value: str, text: str, back: str) -> Markup:
    """A value shown to the operator once (a connect link), read-only, with a copy-to-clipboard button
    (``CONSOLE_JS``; without JavaScript the field can still be selected and copied by hand)."""
    return Markup(
        '<h1>{}</h1><p>{}</p><div class="reveal"><label for="revealed">{}</label>'
        '<input id="revealed" type="text" readonly value="{}" size="70">'
        '<button type="button" data-copy="revealed">Copy to clipboard</button>'
        '<span id="copy-status" role="status" aria-live="polite"></span></div><p>{}</p>').format(
        title, text, label, value, link(back, "Back to the attempt"))


def login_body(error: str | None, next_url: str) -> Markup:
    """The login form (a name and the token or password)."""
    problem = Markup('<p class="error" role="alert">{}</p>').format(error) if error else Markup("")
    return Markup(
        '<h1>Sign in</h1>{}<form method="post" action="/login" class="filters">{}'
        '<span class="field"><label for="login-name">Your name (recorded with your actions)</label>'
        '<input name="name" id="login-name" autocomplete="username" required maxlength="40"></span>'
        '<span class="field"><label for="login-secret">Token or password</label><input name="secret" '
        'id="login-secret" type="password" autocomplete="current-password" required></span>'
        '<button type="submit">Sign in</button></form>').format(
            problem, hidden({"next": next_url}))
