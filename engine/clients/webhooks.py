"""The webhook sender (issue 10/12): one signed POST per event, per Standard Webhooks.

Headers ``webhook-id`` (stable per event: receivers deduplicate on it), ``webhook-timestamp``
(seconds since the epoch, of this send) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` of
``id.timestamp.body`` under the ``whsec_`` secret, computed by the ``standardwebhooks`` package
(extra ``webhooks``). It sends through the same ``engine.clients.transport.Transport`` as the
platform client: connect and read timeouts, one deadline for the whole call (the status line and
headers included), no redirect followed, the answer's body read up to 4 KiB and dropped, and error
texts that name the exception class but never the URL (it may carry a token of the receiver's).

Delivered means: the receiver answered 2xx within the deadline. A 3xx is a failure (not followed:
the signed body would travel to another origin) and is retried like any answer the engine cannot
count as delivered (``engine.core.delivery``); a broken or slow body after a 2xx status line does
not undo the delivery.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests

from engine.clients.transport import Transport, retry_after_seconds
from engine.config import WebhookSettings
from engine.errors import ApiError, ApiTimeoutError, ProvisionError
from engine.tracing import HttpTracer

#: Bytes of a receiver's answer read at most (only its status matters; a short excerpt is logged).
MAX_ANSWER_BYTES = 4096


class WebhooksUnavailableError(ProvisionError):
    """The ``standardwebhooks`` package (extra ``webhooks``) is not installed."""

    kind = "webhooks_unavailable"


def _webhook_class() -> Any:
    try:
        from standardwebhooks.webhooks import Webhook  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise WebhooksUnavailableError(
            "signed webhooks need the standardwebhooks package",
            hint="pip install 'element-provisioner[webhooks]' (or unset PROVISION_WEBHOOK_URL).") from None
    return Webhook


@dataclass(frozen=True)
class WebhookResponse:
    """What one send produced: the HTTP status (None: no answer), Retry-After seconds, an error text."""

    status: int | None
    retry_after: float | None = None
    error: str | None = None


class WebhookSender:
    """POSTs signed event bodies to one URL (``WebhookSettings``); safe to share between threads."""

    def __init__(self, settings: WebhookSettings, *, session: requests.Session | None = None,
                 wall_clock: Callable[[], datetime] | None = None, tracer: HttpTracer | None = None) -> None:
        self.settings = settings
        self._signer = _webhook_class()(settings.secret)
        self.session = session or requests.Session()
        if session is None:
            self.session.trust_env = False  # no proxy or .netrc surprises for a configured URL
        self.transport = Transport(self.session, connect_timeout=settings.connect_timeout,
                                   read_timeout=settings.read_timeout, max_body_bytes=MAX_ANSWER_BYTES,
                                   status_only=True, tracer=tracer)
        self.transport.mount(pool_connections=1, pool_maxsize=4)
        # The signature's timestamp is checked by receivers against THEIR clock (5 minutes of
        # tolerance), so it is real time even when the engine runs on a fake clock.
        self._wall = wall_clock or (lambda: datetime.now(timezone.utc))

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds of one send."""
        return (self.settings.connect_timeout, self.settings.read_timeout)

    def headers(self, webhook_id: str, body: str) -> dict[str, str]:
        """The Standard Webhooks headers of ``body`` sent now as ``webhook_id``."""
        at = self._wall().astimezone(timezone.utc)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, at, body),
            "content-type": "application/json",
            "user-agent": "element-provisioner-webhooks",
        }

    def send(self, webhook_id: str, body: str) -> WebhookResponse:
        """One POST; never raises for network trouble (the outcome says what happened)."""
        request = requests.Request("POST", self.settings.url, data=body.encode(),
                                   headers=self.headers(webhook_id, body))
        try:
            answer = self.transport.send("webhook", self.transport.prepare(request))
        except ApiTimeoutError:
            return WebhookResponse(None, error="no answer within the timeout")
        except ApiError as exc:
            # Transport errors name the exception class, never the URL.
            return WebhookResponse(None, error=f"cannot deliver ({exc.message})")
        if answer.ok:
            return WebhookResponse(answer.status)
        if 300 <= answer.status < 400:
            return WebhookResponse(answer.status,
                                   error=f"receiver answered a redirect (HTTP {answer.status}), not followed")
        return WebhookResponse(answer.status, retry_after_seconds(answer.headers),
                               f"receiver answered HTTP {answer.status}")

    def close(self) -> None:
        """Close pooled connections."""
        self.transport.close()
