"""The webhook sender (issue 10/12): one signed POST per event, per Standard Webhooks.

Headers ``webhook-id`` (stable per event: receivers deduplicate on it), ``webhook-timestamp``
(seconds since the epoch, of this send) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` of
``id.timestamp.body`` under the ``whsec_`` secret, computed by the ``standardwebhooks`` package
(extra ``webhooks``). Defensive like the platform client: connect and read timeouts, a deadline
for the whole answer, no redirects followed, the answer's body capped and never kept, and error
texts that name the exception class but never the URL (it may carry a token of the receiver's).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests
import urllib3

from engine.clients.transport import retry_after_seconds
from engine.config import WebhookSettings
from engine.errors import ProvisionError

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
                 wall_clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self._signer = _webhook_class()(settings.secret)
        self.session = session or requests.Session()
        if session is None:
            self.session.trust_env = False  # no proxy or .netrc surprises for a configured URL
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
        connect_s, read_s = self.timeouts
        deadline = time.monotonic() + connect_s + read_s
        try:
            resp = self.session.post(self.settings.url, data=body.encode(),
                                     headers=self.headers(webhook_id, body), timeout=(connect_s, read_s),
                                     allow_redirects=False, stream=True)
            with resp:
                self._drain(resp, deadline)
        except requests.Timeout:
            return WebhookResponse(None, error="no answer within the timeout")
        except requests.RequestException as exc:
            # str(exc) names the URL: report only the class.
            return WebhookResponse(None, error=f"cannot deliver ({type(exc).__name__})")
        status = resp.status_code
        if 200 <= status < 300:
            return WebhookResponse(status)
        return WebhookResponse(status, retry_after_seconds(resp.headers), f"receiver answered HTTP {status}")

    @staticmethod
    def _drain(resp: requests.Response, deadline: float) -> None:
        """Read (and drop) at most ``MAX_ANSWER_BYTES`` of the answer, within the deadline."""
        size = 0
        while size < MAX_ANSWER_BYTES and time.monotonic() < deadline:
            try:
                chunk = resp.raw.read1(MAX_ANSWER_BYTES - size)
            except urllib3.exceptions.HTTPError:
                return  # the status line arrived; a broken body does not change the outcome
            if not chunk:
                return
            size += len(chunk)

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()
