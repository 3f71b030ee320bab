"""What outgoing HTTP calls know of the step they serve, and their OpenTelemetry CLIENT spans.

The core and the clients are independent layers (``setup.cfg``), so the attempt id and state of
the step in progress travel through a context variable set here by the core (``step_context``)
and read by the transport (``HttpTracer``). Context variables follow the step into whatever
thread runs it, and the OpenTelemetry context does too: a span started while a step span is
current is nested under it.

``HttpTracer`` records one CLIENT span per call with the HTTP method, the endpoint NAME (``oauth_token``,
``create_instance``, ``webhook``: never the URL, whose query may carry an api secret or a token),
the status code, and the attempt id and state when a step or delivery set them. Without
``opentelemetry-api`` (the ``otel`` extra) it does nothing.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CallContext:
    """The attempt an outgoing call works for, and the state it is in."""

    attempt_id: str
    state: str


_CURRENT: ContextVar[CallContext | None] = ContextVar("provision_call_context", default=None)


@contextlib.contextmanager
def step_context(attempt_id: str, state: str) -> Iterator[None]:
    """Calls made inside this block are on behalf of ``attempt_id`` in ``state``."""
    token = _CURRENT.set(CallContext(attempt_id, state))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_call_context() -> CallContext | None:
    """The attempt and state of the step (or delivery) in progress in this context, if any."""
    return _CURRENT.get()


class CallSpan:
    """One call's span while it runs: the transport sets the status code it got."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def status(self, code: int) -> None:
        """Record the HTTP status code of the answer (an error status marks the span failed)."""
        if self._span is None:
            return
        self._span.set_attribute("http.response.status_code", code)
        if code >= 400:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - only with the extra
            self._span.set_status(Status(StatusCode.ERROR, f"HTTP {code}"))


class HttpTracer:
    """CLIENT spans for outgoing calls (the ``otel`` extra); a no-op when it is not installed.

    ``provider`` is the ``TracerProvider`` to use; None means the API's global one (a no-op unless
    the application installed an SDK).
    """

    def __init__(self, provider: Any = None) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - optional: the `otel` extra
        except ImportError:
            self._tracer: Any = None
            return
        self._kind = trace.SpanKind.CLIENT
        self._tracer = trace.get_tracer("element-provisioner.http", tracer_provider=provider)

    @contextlib.contextmanager
    def call(self, endpoint: str, method: str) -> Iterator[CallSpan]:
        """A span named ``HTTP <method> <endpoint>`` around one call; an exception marks it failed."""
        if self._tracer is None:
            yield CallSpan(None)
            return
        attributes: dict[str, str] = {"http.request.method": method, "provision.endpoint": endpoint}
        context = current_call_context()
        if context is not None:
            attributes["provision.attempt_id"] = context.attempt_id
            attributes["provision.state"] = context.state
        # The exception's text stays out (it could quote a URL): the span names only its type.
        with self._tracer.start_as_current_span(f"HTTP {method} {endpoint}", kind=self._kind,
                                                attributes=attributes, record_exception=False,
                                                set_status_on_exception=False) as span:
            try:
                yield CallSpan(span)
            except Exception as exc:
                from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
