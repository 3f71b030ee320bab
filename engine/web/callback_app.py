"""``provision serve``: the HTTP callback receiver, with the read-only status page mounted at /status.

The provider redirects the user's browser to the callback URL; this app hands the query string to
``Engine.handle_callback`` and answers a plain page saying whether the connection worked. It only
answers GET/HEAD on the callback and status routes, never reflects input unescaped, refuses request
bodies and request lines or query strings longer than a callback needs (``MAX_REQUEST_LINE``,
``MAX_QUERY_CHARS``), and never logs query strings (they carry the OAuth verifier or code).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from markupsafe import escape
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from engine.core.callbacks import MAX_CALLBACK_CHARS
from engine.errors import CallbackRejectedError, ProvisionError
from engine.security.redaction import install as install_log_redaction
from engine.security.redaction import redact_text
from engine.signals import stop_on_signals
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
ALLOWED_METHODS = ("GET", "HEAD")
_RETRY_LATER = "The connection could not be recorded; please try again later."


class CallbackRequest(Request):
    """A request whose body may not exceed ``MAX_CONTENT_LENGTH``."""

    max_content_length = MAX_CONTENT_LENGTH


def _page(title: str, detail: str, status: int) -> Response:
    # Both strings are escaped here, whatever their origin, so no caller can forget it.
    html = (
        f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1>\n<p>{escape(detail)}</p>\n</body></html>\n"
    )
    resp = Response(html, status=status, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'"
    resp.headers["Referrer-Policy"] = "no-referrer"  # the callback URL carries a one-time code
    return resp


class CallbackApp:
    """WSGI app: ``GET */callback`` applies a callback, ``/status...`` goes to the status page."""

    def __init__(self, engine: Engine, status_factory: Callable[[Engine], Any] | None = None) -> None:
        self.engine = engine
        self._status_factory = status_factory
        self._status_app: Any = None
        self._status_loaded = False
        self._lock = threading.Lock()

    def _status(self) -> Any:
        """The status page app, imported lazily (it is optional); None when not installed."""
        with self._lock:
            if not self._status_loaded:
                self._status_loaded = True
                factory = self._status_factory
                if factory is None:
                    try:
                        from engine.web.status_page import StatusPage  # noqa: PLC0415 - optional module
                    except ImportError:
                        log.info("engine.web.status_page is not available; /status answers 404")
                        return None
                    factory = StatusPage
                self._status_app = factory(self.engine)
            return self._status_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = CallbackRequest(environ)
        path = request.path
        if request.method not in ALLOWED_METHODS:
            # Every route is read-only (a callback is a browser redirect); nothing else is served.
            resp = _page("Method not allowed", "Only GET and HEAD are served here.", 405)
            resp.headers["Allow"] = ", ".join(ALLOWED_METHODS)
            return resp(environ, start_response)
        if (request.content_length or 0) > 0 or "chunked" in environ.get(
            "HTTP_TRANSFER_ENCODING", ""
        ).lower():
            # GET/HEAD carry no body; one that does is not a browser redirect. Close the connection so
            # the unread body cannot be taken for the next request.
            resp = _page("Payload too large", "Requests to this server carry no body.", 413)
            resp.headers["Connection"] = "close"
            return resp(environ, start_response)
        if len(path) > MAX_PATH_CHARS or len(request.query_string) > MAX_QUERY_CHARS:
            return _page("Link rejected", "Link rejected: the link is too long.", 414)(
                environ, start_response
            )
        if path == "/status" or path.startswith("/status/"):
            status_app = self._status()
            if status_app is not None:
                return status_app(environ, start_response)  # type: ignore[no-any-return]
            return _page("Not found", "The status page is not installed.", 404)(environ, start_response)
        if not path.rstrip("/").endswith("/callback"):
            return _page("Not found", "Nothing here.", 404)(environ, start_response)
        if request.method == "HEAD":
            # Link checkers send HEAD; a one-time code must only be spent by the browser's GET.
            return _page("Callback", "Open this link in a browser.", 200)(environ, start_response)
        return self.callback(request)(environ, start_response)

    def callback(self, request: Request) -> Response:
        """Apply the callback in ``request``'s query string and describe the result."""
        query = request.query_string.decode("latin-1")
        if len(query) > MAX_QUERY_CHARS:
            return _page("Link rejected", "Link rejected: the link is too long.", 414)
        try:
            outcome = self.engine.handle_callback(query)
        except CallbackRejectedError as exc:
            return _page("Link rejected", f"Link rejected: {exc.reason}", 400)
        except ProvisionError as exc:
            log.error("callback could not be processed: %s", exc)
            return _page("Something went wrong", _RETRY_LATER, 500)
        except Exception:  # noqa: BLE001 - a browser gets a page, the operator gets the log
            log.exception("callback failed unexpectedly")
            return _page("Something went wrong", _RETRY_LATER, 500)
        if outcome.status == "duplicate":
            return _page("This link was already used", "This link was already used; nothing changed.", 200)
        if outcome.state is State.FAILED:
            if outcome.reason == FailureReason.USER_DENIED.value:
                return _page("Access was denied", "Access was denied, so the account was not connected.", 200)
            return _page("Connection failed", "The provider reported an error; nothing was connected.", 200)
        return _page("Connected", "Connected. You can close this window; setup finishes in the background.",
                     200)


def make_app(engine: Engine, *, status_factory: Callable[[Engine], Any] | None = None) -> WSGIApplication:
    """The callback receiver as a WSGI app (``status_factory`` overrides the lazily imported status page)."""
    return CallbackApp(engine, status_factory)


class _QuietHandler(WSGIRequestHandler):
    """Logs method, path and status only: query strings carry one-time codes and verifiers."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:  # noqa: D102
        # A malformed request line leaves no ``path``: this used to raise here, so the client got no
        # answer at all instead of its 400/414.
        path = str(getattr(self, "path", "") or "").split("?", 1)[0]
        log.info("%s %s %s", getattr(self, "command", "") or "-", path[:200], code)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002, D102 - werkzeug's signature
        # "Bad request syntax ('GET /callback?code=...')": the request line is quoted; mask its values.
        try:
            text = format % args
        except (TypeError, ValueError):
            text = format
        log.warning("http: %s", redact_text(text)[:500])

    def parse_request(self) -> bool:  # noqa: D102 - BaseHTTPRequestHandler's hook
        # The standard library accepts request lines up to 64 KiB; a callback needs far less.
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.close_connection = True
            self.send_error(414, "Request line too long")
            return False
        return bool(super().parse_request())


def serve(engine: Engine, host: str, port: int, *, ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop``); ``ready`` gets the base URL once listening."""
    install_log_redaction()  # werkzeug's error lines quote request lines, which carry codes and verifiers
    server = make_server(host, port, make_app(engine), threaded=True, request_handler=_QuietHandler)
    stop = stop or threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="provision-serve", daemon=True)
    thread.start()
    try:
        with stop_on_signals(stop.set, doing="stopping the server"):
            url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
            if ready is not None:
                ready(f"http://{url_host}:{server.server_port}")
            # A timed wait keeps the main thread responsive to signals.
            while not stop.wait(0.2):
                pass
    finally:
        server.shutdown()  # finishes the request in flight
        server.server_close()
        thread.join(timeout=5)
