"""``provision console``: the operator console, a server-rendered WSGI app on its own listener.

It is never mounted on the public receiver (``engine.web.callback_app``). Routes:

- ``/healthz``, ``/readyz``; ``/static/console.{css,js}``; ``/login`` (GET form, POST), ``/logout``;
- ``/``: attempts with filters (state, element, failure reason, age, search, view), keyset paging,
  counts per state and the "needs attention" counts; ``?view=attention`` lists retrying, failed and
  reauthorization-required attempts;
- ``/attempts/<id>``: facts, the actions that apply, the path diagram and the timeline;
  ``/attempts/<id>/diagram.{svg,mmd}``;
- ``/attempts/<id>/<action>``: GET asks for confirmation, POST (with the CSRF token) acts;
- ``/bulk/<action>?<filters>``: GET is the dry run (how many, which), POST acts on the selection.

Every action calls the ``Engine`` with the operator's name, which the history records as
``operator:<name>``. Authentication and CSRF: ``engine.web.console_auth``.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from markupsafe import Markup
from werkzeug.exceptions import BadRequest, HTTPException, NotFound, ServiceUnavailable
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from engine.config import ConsoleSettings, console_settings_from_env
from engine.errors import (
    AttemptNotFoundError,
    ConcurrentUpdateError,
    InvalidInputError,
    InvalidTransitionError,
)
from engine.inspection.render import GraphvizMissingError, render_attempt
from engine.web import callback_app
from engine.web.console_actions import DEFAULT_ACTIONS, Action
from engine.web.console_auth import LOCAL_OPERATOR, ConsoleAuth, Operator, is_loopback
from engine.web.console_pages import (
    DEFAULT_PANELS,
    Panel,
    attempt_body,
    confirm_body,
    list_body,
    login_body,
    message_body,
    reveal_body,
)
from engine.web.console_query import AttemptQuery, count, read_page, select
from engine.web.console_views import CONSOLE_CSS, CONSOLE_JS, SECURITY_HEADERS, layout, table
from engine.web.health import HEALTH_PATHS, ReadinessProbe, database_probe, health_response
from engine.web.metrics import CONTENT_TYPE, Metrics, optional_metrics
from states.model import FailureReason, State

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from engine.core.facade import Engine

log = logging.getLogger(__name__)

BULK_CAP = 1000  # attempts one bulk action may touch; the dry run says when more match
NO_LOGIN_BANNER = "No login: loopback only. Anyone who can reach this port on this machine can act."
_GET, _POST = ["GET", "HEAD"], ["POST"]


class ConsoleRequest(Request):
    """Console requests: small forms only."""

    max_content_length = 64 * 1024
    max_form_memory_size = 64 * 1024


class ConsoleApp:
    """The operator console (see the module docstring); ``actions`` and ``panels`` are extension points."""

    def __init__(self, engine: Engine, auth: ConsoleAuth, *, probe: ReadinessProbe | None = None,
                 actions: Sequence[Action] = DEFAULT_ACTIONS,
                 panels: Sequence[Panel] = DEFAULT_PANELS, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics  # None: no /metrics on this console
        self.auth = auth
        self.probe = probe or database_probe(engine)
        self.actions = {a.name: a for a in actions}
        self.panels = tuple(panels)
        self.url_map = Map([
            Rule("/", endpoint="index", methods=_GET),
            Rule("/login", endpoint="login", methods=_GET + _POST),
            Rule("/logout", endpoint="logout", methods=_POST),
            Rule("/attempts/<attempt_id>", endpoint="attempt", methods=_GET),
            Rule("/attempts/<attempt_id>/diagram.svg", endpoint="diagram_svg", methods=_GET),
            Rule("/attempts/<attempt_id>/diagram.mmd", endpoint="diagram_mermaid", methods=_GET),
            Rule("/attempts/<attempt_id>/<action>", endpoint="action", methods=_GET + _POST),
            Rule("/bulk/<action>", endpoint="bulk", methods=_GET + _POST),
        ])

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = ConsoleRequest(environ)
        response = self.respond(request)
        response.headers.extend({k: v for k, v in SECURITY_HEADERS.items() if k not in response.headers})
        return response(environ, start_response)

    # --- routing, authentication, CSRF -------------------------------------------------------------

    def respond(self, request: Request) -> Response:
        """Check the request (host, session, CSRF), then run its page."""
        if not self.auth.host_ok(request):
            return Response("This console answers only on a loopback address.\n", status=421,
                            mimetype="text/plain")
        health = health_response(request.path, self.probe) if request.path in HEALTH_PATHS else None
        if health is not None:
            return health
        if request.path in ("/static/console.css", "/static/console.js"):
            css = request.path.endswith(".css")
            resp = Response(CONSOLE_CSS if css else CONSOLE_JS,
                            mimetype="text/css" if css else "text/javascript")
            resp.headers["Cache-Control"] = "max-age=300"
            return resp
        operator = self.auth.session(request)
        if request.path == "/metrics" and self.metrics is not None:
            return self.scrape(request, operator)
        fresh = None
        if operator is None and not self.auth.login_required:
            operator = fresh = self.auth.new_session(LOCAL_OPERATOR)
        try:
            endpoint, args = self.url_map.bind_to_environ(request.environ).match()
            if endpoint == "login":
                return self.login(request, operator)
            if operator is None:
                target = request.full_path if request.method == "GET" else "/"
                return _redirect(f"/login?{urlencode({'next': target.rstrip('?')})}")
            if request.method == "POST" and not self.auth.csrf_ok(request, operator):
                response = self.page("Refused", message_body(
                    "Refused", "This form was not sent by this console session (missing or wrong CSRF "
                    "token). Reload the page and try again.", "/"), operator, status=403)
            else:
                response = getattr(self, endpoint)(request, operator, **args)
        except AttemptNotFoundError as exc:
            response = self.error(NotFound(exc.message), operator)
        except InvalidInputError as exc:
            response = self.error(BadRequest(exc.message), operator)
        except HTTPException as exc:  # 404 for other paths, 405 for wrong methods
            response = self.error(exc, operator)
        if fresh is not None:
            self.auth.set_cookie(response, fresh)
        return response

    def scrape(self, request: Request, operator: Operator | None) -> Response:
        """``/metrics``: open on a console without login, else a session or the token as a bearer."""
        assert self.metrics is not None
        if self.auth.login_required and operator is None and not self.auth.bearer_ok(request):
            return Response("Sign in, or send the console token as 'Authorization: Bearer'.\n",
                            status=401, mimetype="text/plain")
        return Response(self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    def page(self, title: str, body: Markup, operator: Operator | None, *, status: int = 200) -> Response:
        """A whole page for ``operator``."""
        banner = None if self.auth.login_required else NO_LOGIN_BANNER
        html = layout(title, body, operator=operator.name if operator else None,
                      csrf=operator.csrf if operator and self.auth.login_required else None, banner=banner)
        return Response(html, status=status, mimetype="text/html")

    def error(self, exc: HTTPException, operator: Operator | None) -> Response:
        """An error page with the exception's status."""
        response = self.page(f"{exc.code} {exc.name}", message_body(
            f"{exc.code} {exc.name}", str(exc.description), "/", "All attempts"), operator,
            status=exc.code or 500)
        if exc.code == 405:
            valid = getattr(exc, "valid_methods", None) or _GET
            response.headers["Allow"] = ", ".join(m for m in ("GET", "HEAD", "POST") if m in valid)
        return response

    # --- sign in and out ---------------------------------------------------------------------------

    def login(self, request: Request, operator: Operator | None) -> Response:
        """The login form; POST checks the credentials and sets the session cookie."""
        next_url = request.values.get("next", "/")
        if not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
            next_url = "/"  # never an open redirect
        if not self.auth.login_required:
            return _redirect(next_url)
        if request.method == "GET":
            return self.page("Sign in", login_body(None, next_url), operator)
        who = self.auth.check_login(request.form.get("name", ""), request.form.get("secret", ""))
        if who is None:
            log.warning("console login refused")
            return self.page("Sign in", login_body("Name, token or password not accepted.", next_url), None,
                             status=401)
        log.info("console login: operator:%s", who.name)
        response = _redirect(next_url)
        self.auth.set_cookie(response, who)
        return response

    def logout(self, request: Request, operator: Operator) -> Response:
        """End the session."""
        response = _redirect("/login" if self.auth.login_required else "/")
        self.auth.clear_cookie(response)
        return response

    # --- reading ------------------------------------------------------------------------------------

    def index(self, request: Request, operator: Operator) -> Response:
        """The attempt list (see the module docstring)."""
        query = AttemptQuery.from_args(request.args)
        page = read_page(self.engine, query)
        counts = self.engine.counts()
        attention = [("retrying", "retrying", self._count(AttemptQuery(view="retrying"))),
                     ("failed", "failed", str(counts.get(State.FAILED.value, 0))),
                     ("reauth", "reauthorization required",
                      self._count(AttemptQuery(view="reauth", reason=FailureReason.RENEWAL_REJECTED.value))),
                     ("unhealthy", "unhealthy", self._count(AttemptQuery(view="unhealthy")))]
        bulk = [a for a in self.actions.values() if _bulk_allowed(a, query)]
        return self.page("Attempts", list_body(query, page, counts, attention, bulk), operator)

    def _count(self, query: AttemptQuery) -> str:
        # One COUNT(*) in the database (console_query.count): exact, whatever the table's size.
        return str(count(self.engine, query))

    def attempt(self, request: Request, operator: Operator, attempt_id: str) -> Response:
        """One attempt: facts, actions, path, timeline."""
        attempt = self.engine.get(attempt_id)
        history = self.engine.history(attempt.id)
        body = attempt_body(self.engine, attempt, history, self.engine.redirect_url(attempt),
                            list(self.actions.values()), self.panels)
        return self.page(f"Attempt {attempt.name}", body, operator)

    def diagram_svg(self, request: Request, operator: Operator, attempt_id: str) -> Response:
        """The attempt's path as SVG (503 without Graphviz)."""
        attempt = self.engine.get(attempt_id)
        try:
            svg = render_attempt(attempt, self.engine.history(attempt.id), "svg")
        except GraphvizMissingError as exc:
            raise ServiceUnavailable(str(exc)) from None
        return Response(svg, mimetype="image/svg+xml")

    def diagram_mermaid(self, request: Request, operator: Operator, attempt_id: str) -> Response:
        """The attempt's path as Mermaid text."""
        attempt = self.engine.get(attempt_id)
        text = render_attempt(attempt, self.engine.history(attempt.id), "mermaid")
        return Response(text, mimetype="text/plain")

    # --- acting -------------------------------------------------------------------------------------

    def _action(self, name: str) -> Action:
        action = self.actions.get(name)
        if action is None:
            raise NotFound(f"no action {name[:40]!r} here")
        return action

    def action(self, request: Request, operator: Operator, attempt_id: str, action: str) -> Response:
        """GET: the confirmation step. POST: do it, as ``operator``, and show the attempt."""
        act = self._action(action)
        attempt = self.engine.get(attempt_id)
        back = f"/attempts/{attempt.id}"
        if not act.applies(attempt):
            return self.page("Not possible", message_body(
                f"{act.label} is not possible",
                f"Attempt {attempt.id} is {attempt.state}: {act.label.lower()} does not apply to it.", back),
                operator, status=409)
        if request.method != "POST":
            return self.page(f"{act.label}?", confirm_body(
                f"{act.label} attempt {attempt.name}?", act.explain(attempt), f"{back}/{act.name}",
                {"csrf": operator.csrf}, f"Yes, {act.label.lower()}", back, danger=act.danger), operator)
        try:
            result = act.run(self.engine, attempt.id, operator.actor)
        except (InvalidTransitionError, ConcurrentUpdateError) as exc:
            return self.page("Not done", message_body(f"{act.label} was not done", str(exc), back), operator,
                             status=409)
        log.info("console: operator:%s %s %s", operator.name, act.name, attempt.id)  # never the result
        if isinstance(result, str):  # a value to show once (the connect link): no redirect, no cache
            return self.page(act.label, reveal_body(
                f"Connect link for {attempt.name}", "Connect link", result,
                "Send this link to the customer. It works once and expires with the consent deadline; "
                "making another one revokes it.", back), operator)
        return _redirect(back)

    def bulk(self, request: Request, operator: Operator, action: str) -> Response:
        """GET: the dry run (how many match, the first ones). POST: act on them, then report."""
        act = self._action(action)
        query = replace(AttemptQuery.from_args(request.values), after=None)
        back = f"/?{urlencode(query.params())}"
        if not _bulk_allowed(act, query):
            return self.page("Not possible", message_body(
                f"Bulk {act.label.lower()} is not possible for this filter",
                f"Filter on a state it applies to: {', '.join(s.value for s in act.bulk_states)}.", back),
                operator, status=409)
        selection = select(self.engine, query, BULK_CAP)
        count = len(selection.ids)
        if request.method != "POST":
            more = (f" More than {BULK_CAP} match: only the first {BULK_CAP} are selected."
                    if selection.more else "")
            sample = [(self.engine.get(i).name, i) for i in selection.ids[:20]]
            listing = table(["name", "id"], sample, cls="selection",
                            caption=f"First {len(sample)} of the {count} selected") if sample else Markup("")
            fields = {**query.params(), "csrf": operator.csrf, "expected": str(count)}
            return self.page("Dry run", confirm_body(
                f"Dry run: {count} attempt{'s' if count != 1 else ''} would be affected",
                f"{act.bulk_text(count)} matching this filter.{more} Nothing has changed yet.",
                f"/bulk/{act.name}", fields, act.bulk_text(count), back, danger=act.danger, listing=listing),
                operator)
        if request.form.get("expected") != str(count):
            return self.page("Selection changed", message_body(
                "The selection changed since the dry run",
                f"{count} attempts match now (the dry run said {request.form.get('expected', '?')[:8]}). "
                "Nothing was done; review the new dry run.", f"/bulk/{act.name}?{urlencode(query.params())}",
                "New dry run"), operator, status=409)
        done, skipped = 0, 0
        for attempt_id in selection.ids:
            try:
                act.run(self.engine, attempt_id, operator.actor)
                done += 1
            except (InvalidTransitionError, ConcurrentUpdateError, AttemptNotFoundError):
                skipped += 1  # changed since the selection was read: leave it as it is
        log.info("console: operator:%s bulk %s: %d done, %d skipped", operator.name, act.name, done, skipped)
        return self.page("Done", message_body(
            f"{act.label}: {done} done, {skipped} skipped",
            f"{done} attempt{'s' if done != 1 else ''} {act.name} by operator:{operator.name}; {skipped} had "
            "changed and were left alone.", back, "Back to the list"), operator)


def _bulk_allowed(action: Action, query: AttemptQuery) -> bool:
    states = query.states
    return bool(action.bulk_states) and bool(states) and all(s in action.bulk_states for s in states)


def _redirect(location: str) -> Response:
    return Response("", status=303, headers={"Location": location})


def make_console(engine: Engine, settings: ConsoleSettings, *, secure_cookies: bool = False,
                 **kw: Any) -> ConsoleApp:
    """A ``ConsoleApp`` for ``settings`` (``kw``: ``probe``, ``actions``, ``panels``)."""
    return ConsoleApp(engine, ConsoleAuth(settings, secure_cookies=secure_cookies), **kw)


def check_listener(host: str, settings: ConsoleSettings) -> None:
    """Refuse a non-loopback address without a login (``InvalidInputError`` naming ``--host``)."""
    if not is_loopback(host) and not settings.auth_configured:
        raise InvalidInputError(
            "--host", f"{host!r} is not a loopback address and the console has no login configured",
            hint="Set PROVISION_CONSOLE_TOKEN (or PROVISION_CONSOLE_PASSWORD_HASH), or bind 127.0.0.1.")


def serve_console(engine: Engine, host: str, port: int, *, settings: ConsoleSettings | None = None,
                  ready: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                  metrics: Metrics | None = None) -> None:
    """Serve the console until SIGINT/SIGTERM (or ``stop``); refuses an unsafe listener first."""
    settings = settings or console_settings_from_env()
    check_listener(host, settings)
    metrics = metrics or optional_metrics(engine)
    app = make_console(engine, settings, secure_cookies=not is_loopback(host), metrics=metrics)
    callback_app.serve(engine, host, port, ready=ready, stop=stop, app=app)
