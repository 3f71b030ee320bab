"""The one HTTP layer under the platform client and the provider client (issue 15, must-have 7).

Both clients hand a prepared request to :class:`Transport`, which:

- never follows a redirect: a 3xx is :class:`RedirectRefusedError` (a 307 from a hostile token endpoint
  would otherwise re-post the refresh token to another origin);
- streams the body and stops at ``max_body_bytes`` (a 300 MB answer must not cost gigabytes);
- enforces an overall deadline per call besides requests' connect/read timeouts (a server dripping
  one byte per read timeout would otherwise hold a step for ever);
- maps failures to the ``ApiError`` classes of ``engine.errors``.

It also holds the checks applied to values before the engine stores them (:func:`checked_text`,
:func:`checked_instance_id`). Messages built here never contain URLs, query strings or bodies:
those carry api secrets, tokens and verifiers.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.cookies import extract_cookies_to_jar
from requests.utils import resolve_proxies

from engine.clients.deadline import DeadlineAdapter, HeaderWatchdog
from engine.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidDatabaseError,
    MalformedResponseError,
    NotFoundApiError,
    PermanentApiError,
    ProviderRejectedError,
    RateLimitedError,
    ServiceUnavailableError,
)
from engine.security.crypto import scrub
from engine.tracing import CallSpan, HttpTracer

DEFAULT_MAX_BODY_BYTES = 1 << 20
#: ``attempts.instance_id`` is ``String(64)`` (persistence/schema.py); a longer id from the platform
#: must fail the step once, classified, not raise a DataError on every tick.
MAX_INSTANCE_ID_CHARS = 64
#: OAuth tokens and secrets: Intuit's OAuth2 access tokens (JWTs) are about 1 000 characters.
MAX_TOKEN_CHARS = 8192


class RedirectRefusedError(PermanentApiError):
    """The platform or provider answered 3xx; the client follows no redirect (secrets would travel)."""

    kind = "redirect"


class SandboxCompanyRequiredError(BadRequestError):
    """QuickBooks' ``3100 AuthorizationFailed``: development keys used without the sandbox flag."""

    kind = "sandbox_company_required"


SANDBOX_COMPANY_HINT = (
    "Development keys reach only sandbox companies, and only when the instance says so: start with "
    "--sandbox-company (configuration use_sandbox=true), or use the app's production keys.")


class InvalidValueError(PermanentApiError):
    """A value in an answer has the wrong type or size to be stored (e.g. an over-long instance id)."""

    kind = "invalid_value"


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer: status, headers and the (capped) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """A numeric Retry-After header in seconds; None when absent or an HTTP date."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def _text(value: Any, limit: int = 500) -> str | None:
    if value is None:
        return None
    return str(value)[:limit]


def error_from_response(
    endpoint: str, status: int, body: Any, headers: Mapping[str, str] | None = None, *,
    sent: set[str] | None = None,
) -> ApiError:
    """Map an error answer (platform or provider) to its ``ApiError`` subclass.

    ``sent``: the secret values of the request (its credentials, a ``state``...): a server that
    quotes them back in its message gets them masked here, before the error is logged or stored.
    """
    headers = headers or {}
    payload = body if isinstance(body, dict) else {}
    needles = sent or set()
    message = scrub(_text(payload.get("message")), needles) or f"HTTP {status} without a JSON error body"
    provider = scrub(_text(payload.get("providerMessage")), needles)
    request_id = _text(payload.get("requestId"), 64) or _text(headers.get("Elements-Request-Id"), 64)
    kw: dict[str, Any] = dict(
        status=status, provider_message=provider, request_id=request_id, endpoint=endpoint
    )
    retry_after = retry_after_seconds(headers)
    if 300 <= status < 400:
        return RedirectRefusedError(
            f"answered a redirect (HTTP {status}), which the client does not follow", **kw,
            hint="Check the configured URL (scheme, host, path): the server redirects it elsewhere.")
    if status == 429:
        return RateLimitedError(message, retry_after=retry_after, **kw)
    if status >= 500:
        return ServiceUnavailableError(message, retry_after=retry_after, **kw)
    if status == 400:
        if provider and "invalid_database" in provider:
            return InvalidDatabaseError(message, **kw)
        if provider and "AuthorizationFailed" in provider and "3100" in provider:
            return SandboxCompanyRequiredError(message, **kw, hint=SANDBOX_COMPANY_HINT)
        if provider:
            return ProviderRejectedError(message, **kw)
        return BadRequestError(message, **kw)
    if status == 401:
        return AuthenticationError(message, **kw)
    if status == 403:
        return ForbiddenError(message, **kw)
    if status == 404:
        return NotFoundApiError(message, **kw)
    if status == 409:
        return ConflictError(message, **kw)
    return BadRequestError(message, **kw)


def checked_text(endpoint: str, field: str, value: Any, *, limit: int = MAX_TOKEN_CHARS) -> str:
    """``value`` if it is a non-empty printable string of at most ``limit`` characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedResponseError(f"field {field!r} missing or not a string", endpoint=endpoint,
                                     status=200)
    text = str(value)
    if not text or len(text) > limit or not text.isprintable():
        raise InvalidValueError(
            f"field {field!r} is empty, longer than {limit} characters or not printable "
            f"({len(text)} characters)", endpoint=endpoint, status=200,
            hint="The server's answer cannot be stored; report it to the platform's support.")
    return text


def checked_instance_id(endpoint: str, value: Any) -> str:
    """An instance id that fits ``attempts.instance_id``."""
    return checked_text(endpoint, "id", value, limit=MAX_INSTANCE_ID_CHARS)


class Transport:
    """Sends prepared requests through one ``requests.Session`` with the guards above.

    ``deadline_s`` bounds a whole call (connect, headers and body); it defaults to connect + read
    timeout, which is also what the engine sizes its lease from. ``status_only`` is for callers
    that need only the status (the webhook sender): the body is read up to ``max_body_bytes`` and
    dropped, and a longer, broken or late body no longer changes the outcome once the status line
    arrived. ``tracer`` records one OpenTelemetry CLIENT span per call (``engine.tracing``).
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        deadline_s: float | None = None,
        status_only: bool = False,
        tracer: HttpTracer | None = None,
    ) -> None:
        self.session = session
        self.status_only = status_only
        self.tracer = tracer or HttpTracer()
        self.timeouts = (connect_timeout, read_timeout)
        self.max_body_bytes = max_body_bytes
        self.deadline_s = deadline_s if deadline_s is not None else connect_timeout + read_timeout
        # The deadline also covers the status line and headers (engine.clients.deadline).
        self.watchdog = HeaderWatchdog()

    def mount(self, *, pool_connections: int, pool_maxsize: int) -> None:
        """Route the session's http(s) requests through an adapter that enforces the deadline."""
        adapter = DeadlineAdapter(self.watchdog, pool_connections=pool_connections, pool_maxsize=pool_maxsize)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def prepare(self, request: requests.Request) -> requests.PreparedRequest:
        """``request`` merged with the session's settings (headers, cookies, auth)."""
        return self.session.prepare_request(request)

    def send(self, endpoint: str, prep: requests.PreparedRequest) -> Answer:
        """Send ``prep``; return the answer of any status, or raise a transport ``ApiError``.

        ``endpoint`` names the call in errors and spans (never the URL: it may carry secrets).
        """
        with self.tracer.call(endpoint, prep.method or "GET") as span:
            return self._traced_send(endpoint, prep, span)

    def _traced_send(self, endpoint: str, prep: requests.PreparedRequest, span: CallSpan) -> Answer:
        deadline = time.monotonic() + self.deadline_s
        try:
            with self.watchdog.call(deadline):
                resp = self._send(prep)
            span.status(resp.status_code)
            with resp:
                if resp.is_redirect or 300 <= resp.status_code < 400:
                    # Not even read: the body of a redirect is of no use and may be anything.
                    return Answer(resp.status_code, resp.headers, b"")
                body = self._read_body(resp, endpoint, deadline)
        except requests.Timeout:
            raise ApiTimeoutError("no answer within the timeout", endpoint=endpoint) from None
        except requests.ConnectionError as exc:
            if time.monotonic() >= deadline:  # the watchdog cut a head that arrived too slowly
                raise ApiTimeoutError("answer arrived too slowly", endpoint=endpoint) from None
            # str(exc) would include the URL and its query (apiSecret): report only the class.
            raise ApiConnectionError(f"cannot connect ({type(exc).__name__})", endpoint=endpoint) from None
        except requests.RequestException as exc:
            raise ApiConnectionError(f"request failed ({type(exc).__name__})", endpoint=endpoint) from None
        return Answer(resp.status_code, resp.headers, body)

    def _send(self, prep: requests.PreparedRequest) -> requests.Response:
        """``Session.send`` without its redirect machinery.

        Even with ``allow_redirects=False``, ``Session.send`` walks ``resolve_redirects`` once to fill
        ``Response.next``: that reads the whole 3xx body (unbounded) and, for a request prepared
        without cookies, raised AttributeError. The adapter is called as ``Session.send`` calls it,
        with the session's TLS settings and proxies, and cookies are stored as it stores them (no
        response hooks are registered by this project).
        """
        session = self.session
        adapter = session.get_adapter(url=prep.url or "")
        proxies = resolve_proxies(prep, dict(session.proxies), session.trust_env)
        verify = True if session.verify is None else session.verify
        resp = adapter.send(prep, stream=True, timeout=self.timeouts, verify=verify,
                            cert=session.cert, proxies=proxies)
        headers = resp.raw.headers
        # The jar only reads these two headers; without them extraction is a no-op that still
        # builds a mock request and response per call.
        if "Set-Cookie" in headers or "Set-Cookie2" in headers:
            extract_cookies_to_jar(session.cookies, prep, resp.raw)  # type: ignore[no-untyped-call]
        return resp

    def _read_body(self, resp: requests.Response, endpoint: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:  # a slow drip resets the read timeout on every byte
                if self.status_only:
                    return b"".join(chunks)  # the status arrived in time; the body does not matter
                raise ApiTimeoutError(
                    "answer arrived too slowly", endpoint=endpoint, status=resp.status_code
                )
            # read1 returns what has arrived (at most 64 KiB) instead of waiting for 64 KiB, so a
            # server dripping bytes cannot hold the step past the deadline.
            try:
                chunk = resp.raw.read1(65536, decode_content=True)  # gzip, as requests would
            except urllib3.exceptions.HTTPError as exc:
                if self.status_only:
                    return b"".join(chunks)  # a broken body does not change a status-only outcome
                if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                    raise ApiTimeoutError("no answer within the timeout", endpoint=endpoint) from None
                raise ApiConnectionError(
                    f"answer broken off ({type(exc).__name__})", endpoint=endpoint
                ) from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body_bytes:
                if self.status_only:
                    return b"".join(chunks)  # read no further: only the status counts
                raise MalformedResponseError(
                    f"response larger than {self.max_body_bytes} bytes",
                    endpoint=endpoint,
                    status=resp.status_code,
                )
            chunks.append(chunk)
