"""``provision serve``: the PUBLIC HTTP receiver of provider callbacks, and nothing else.

Routes: ``GET */callback`` (the provider's redirect), ``GET */callback/progress?t=TOKEN`` (the
customer's progress page), ``GET */connect/TOKEN`` (a single-use connect link: 302 to the consent
URL, ``engine.core.connect``), ``/healthz`` and ``/readyz``. The operator console is a separate app on
its own listener (``engine.web.console``, ``provision console``): nothing here shows attempts.

The provider redirects the user's browser to the callback URL; this app hands the query string to
``Engine.handle_callback`` and sends the browser on (303) to a progress page bound to the attempt by
a short-lived token (``engine.web.progress_tokens``). That page says "Connecting..." and refreshes
until the attempt is PROVISIONED or FAILED, then says which in plain words (``customer_pages``).
A forged, replayed or expired link gets "This link is no longer valid"; the reason is logged for the
operator, never shown. Only GET/HEAD are answered, nothing is reflected, request bodies and long
request lines or query strings are refused (``MAX_REQUEST_LINE``, ``MAX_QUERY_CHARS``), and query
strings are never logged (they carry the OAuth verifier or code).

Bounded under load (issue 16): it runs under waitress (``engine.web.wsgi_server``: a fixed thread
pool, a connection limit, idle connections closed); a callback that matches no attempt is counted,
not stored (``engine.core.callbacks``), and each client address may send only a few refused
callbacks before it gets 429 with ``Retry-After`` (``engine.web.ratelimit``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Request, Response

from engine.config import (
    Branding,
    ServeSettings,
    branding_from_env,
    callback_page_key_from_env,
    serve_settings_from_env,
)
from engine.core.callbacks import MAX_CALLBACK_CHARS
from engine.core.connect import CONNECT_PATH
from engine.errors import AttemptNotFoundError, CallbackRejectedError, ProvisionError
from engine.security.redaction import install as install_log_redaction
from engine.signals import stop_on_signals
from engine.web.customer_pages import CustomerPages
from engine.web.health import HEALTH_PATHS, ReadinessProbe, database_probe, health_response
from engine.web.progress_tokens import ProgressTokens
from engine.web.ratelimit import RateLimiter
from engine.web.wsgi_server import run_server
from states.model import FailureReason, State

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from engine.core.facade import Engine

log = logging.getLogger(__name__)

MAX_CONTENT_LENGTH = 16 * 1024  # callbacks are GETs; anything with a large body is not for us
MAX_QUERY_CHARS = MAX_CALLBACK_CHARS  # what Engine.handle_callback accepts anyway
MAX_PATH_CHARS = 1024
# Longest request line (method, path, query, version) the server reads; the standard library's
# limit is 64 KiB. Longer lines get 414 before any parsing.
MAX_REQUEST_LINE = MAX_QUERY_CHARS + MAX_PATH_CHARS + 32
RATE_TABLE_SIZE = 10_000  # client addresses whose refused callbacks are remembered (LRU)
ALLOWED_METHODS = ("GET", "HEAD")
PROGRESS_SUFFIX = "/callback/progress"


class CallbackRequest(Request):
    """A request whose body may not exceed ``MAX_CONTENT_LENGTH``."""

    max_content_length = MAX_CONTENT_LENGTH


class SeeOther:
    """The 303 to the progress page, as a bare WSGI response.

    What ``Response(status=303, headers={"Location": ...})`` with the two headers below sends, byte
    for byte, without building a werkzeug ``Response`` and ``Headers`` for it: that cost more CPU
    than parsing the callback and sealing its parameters together, on every applied callback
    (bench/callback_cost.py).
    """

    def __init__(self, location: str) -> None:
        self.location = iri_to_uri(location)  # as werkzeug does to a Location header

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("303 SEE OTHER", [
            ("Location", self.location), ("Content-Type", "text/plain; charset=utf-8"),
            ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"), ("Content-Length", "0")])
        return [b""]


class CallbackApp:
    """WSGI app: ``GET */callback`` applies a callback; ``*/callback/progress`` follows its attempt."""

    def __init__(self, engine: Engine, *, pages: CustomerPages, tokens: ProgressTokens,
                 probe: ReadinessProbe, limiter: RateLimiter) -> None:
        self.engine = engine
        self.pages = pages
        self.tokens = tokens
        self.probe = probe
        self.limiter = limiter

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = CallbackRequest(environ)
        return self.route(request)(environ, start_response)

    def route(self, request: Request) -> WSGIApplication:
        """The response to ``request`` (every refusal is a plain customer page)."""
        path = request.path
        if request.method not in ALLOWED_METHODS:
            # Every route is read-only (a callback is a browser redirect); nothing else is served.
            resp = self.pages.page("method", 405)
            resp.headers["Allow"] = ", ".join(ALLOWED_METHODS)
            return resp
        if (request.content_length or 0) > 0 or "chunked" in request.environ.get(
            "HTTP_TRANSFER_ENCODING", ""
        ).lower():
            # GET/HEAD carry no body; one that does is not a browser redirect. (The server reads
            # the declared body whole, at most 16 KiB, so it cannot be taken for the next request;
            # "Connection" is the server's header, which PEP 3333 forbids an app to set.)
            return self.pages.page("too_large", 413)
        if len(path) > MAX_PATH_CHARS or len(request.query_string) > MAX_QUERY_CHARS:
            return self.pages.page("too_long", 414)
        if path in HEALTH_PATHS:
            return health_response(path, self.probe) or self.pages.page("not_found", 404)
        if path.rstrip("/").endswith(PROGRESS_SUFFIX):
            return self.progress(request)
        _, connect, token = path.rstrip("/").rpartition(CONNECT_PATH)
        if connect and token and "/" not in token:
            return self.connect(request, token)
        if not path.rstrip("/").endswith("/callback"):
            return self.pages.page("not_found", 404)
        if request.method == "HEAD":
            # Link checkers send HEAD; a one-time code must only be spent by the browser's GET.
            return self.pages.page("open_in_browser")
        return self.callback(request)

    def callback(self, request: Request) -> WSGIApplication:
        """Apply the callback in ``request``'s query string; send the browser to its progress page.

        An address that sent too many refused callbacks gets 429 before the engine is asked.
        """
        address = request.remote_addr or "-"
        wait = self.limiter.retry_after(address)
        if wait is not None:
            resp = self.pages.page("too_many", 429)
            resp.headers["Retry-After"] = str(wait)
            return resp
        query = request.query_string.decode("latin-1")
        try:
            outcome = self.engine.handle_callback(query)
        except CallbackRejectedError as exc:
            # The operator finds the reason in the log (and the inbox, when it matched an attempt);
            # the customer gets no internal words (state, nonce, verifier...).
            self.limiter.charge(address)
            log.info("callback link refused: %s", exc.reason)
            return self.pages.page("invalid", 400)
        except ProvisionError as exc:
            log.error("callback could not be processed: %s", exc)
            return self.pages.page("error", 500)
        except Exception:  # noqa: BLE001 - a browser gets a page, the operator gets the log
            log.exception("callback failed unexpectedly")
            return self.pages.page("error", 500)
        if outcome.status != "applied":
            # A repeat, or a callback for an attempt not redirected yet, is stored: it also costs
            # the address a token, so that nobody can grow the inbox through these paths either.
            self.limiter.charge(address)
        if outcome.status == "duplicate" or outcome.attempt_id is None:
            return self.pages.page("invalid")
        base = request.script_root + request.path.rstrip("/")
        return SeeOther(f"{base}/progress?t={quote(self.tokens.issue(outcome.attempt_id), safe='')}")

    def connect(self, request: Request, token: str) -> Response:
        """A connect link (``engine.core.connect``): 302 to the consent URL, once."""
        if request.method == "HEAD":
            # Mail scanners and link previews send HEAD: only the customer's GET spends the link.
            return self.pages.page("open_in_browser")
        try:
            url = self.engine.open_connect_link(token)
        except Exception:  # noqa: BLE001 - a browser gets a page, the operator gets the log
            log.exception("connect link could not be opened")
            return self.pages.page("error", 500)
        if url is None:
            log.info("connect link refused: unknown, used or expired")
            return self.pages.page("invalid", 410)
        response = Response(status=302, headers={"Location": url})
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def progress(self, request: Request) -> Response:
        """"Connecting..." until the attempt of the token is PROVISIONED or FAILED; then which."""
        attempt_id = self.tokens.open(request.args.get("t"))
        if attempt_id is None:
            return self.pages.page("invalid", 400)
        try:
            attempt = self.engine.get(attempt_id)
        except AttemptNotFoundError:
            return self.pages.page("invalid", 400)
        except Exception:  # noqa: BLE001 - a database hiccup: keep polling rather than lie
            log.exception("progress page could not read the attempt")
            attempt = None
        if attempt is not None and attempt.state is State.PROVISIONED:
            return self.pages.page("connected")
        if attempt is not None and attempt.state is State.FAILED:
            return self.pages.page(_FAILED_PAGES.get(attempt.failure_reason or "", "failed"))
        return self.pages.page("connecting", refresh_url=request.script_root + request.full_path)


#: The customer page of a FAILED attempt by failure reason ("failed" for the others).
_FAILED_PAGES = {FailureReason.USER_DENIED.value: "denied",
                 FailureReason.DUPLICATE_CONNECTION.value: "already_connected"}


def make_app(engine: Engine, *, branding: Branding | None = None, tokens: ProgressTokens | None = None,
             pages: CustomerPages | None = None, probe: ReadinessProbe | None = None,
             limiter: RateLimiter | None = None) -> WSGIApplication:
    """The callback receiver as a WSGI app.

    ``branding`` styles the customer pages (or pass ready ``pages`` with your own messages);
    ``tokens`` binds progress pages to attempts (default: a key made for this process);
    ``probe`` answers ``/readyz`` (default: the database is reachable and migrated);
    ``limiter`` limits refused callbacks per client address (default: ``ServeSettings()``'s).
    """
    return CallbackApp(engine, pages=pages or CustomerPages(branding), tokens=tokens or ProgressTokens(),
                       probe=probe or database_probe(engine),
                       limiter=limiter or make_limiter(ServeSettings()))


def make_limiter(settings: ServeSettings) -> RateLimiter:
    """The per-address limiter of refused callbacks that ``settings`` describe."""
    return RateLimiter(burst=settings.refused_burst, per_second=settings.refused_per_minute / 60,
                       max_addresses=RATE_TABLE_SIZE, clock=time.monotonic)


def serve(engine: Engine, host: str, port: int, *, ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None, app: WSGIApplication | None = None,
          settings: ServeSettings | None = None) -> None:
    """Serve under waitress until SIGINT/SIGTERM (or ``stop``); ``ready`` gets the base URL once listening.

    ``app`` replaces the receiver (``engine.web.console`` serves the console through this loop);
    by default the receiver is built with the environment's branding, progress-link key and
    ``PROVISION_SERVE_*`` settings (threads, connections, idle timeout, refused-callback limits).
    """
    install_log_redaction()  # server error lines may quote request lines, which carry codes and verifiers
    settings = settings or serve_settings_from_env()
    if app is None:
        tokens = ProgressTokens(callback_page_key_from_env())
        app = make_app(engine, branding=branding_from_env(), tokens=tokens, limiter=make_limiter(settings))
    stop = stop or threading.Event()

    def listening(bound_port: int) -> None:
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ready is not None:
            ready(f"http://{url_host}:{bound_port}")

    with stop_on_signals(stop.set, doing="stopping the server"):
        run_server(app, host, port, settings=settings, ready=listening, stop=stop)
