"""Signed event delivery: ``WebhookSettings`` from ``PROVISION_WEBHOOK_*`` (issue 10/12: events)."""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from engine.config.bounds import BOUNDS
from engine.config.checks import check_url
from engine.config.environment import environment
from engine.errors import InvalidInputError

#: Standard Webhooks secrets: ``whsec_`` and the base64 of 24 to 64 random bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class WebhookSettings:
    """Where the worker sends signed events and how hard it tries (``engine.core.delivery``).

    Transient failures (no answer, 408, 429, 5xx) are retried ``max_tries`` times in all, waiting
    ``backoff_initial`` seconds doubling to ``backoff_max`` (a longer Retry-After wins, up to
    ``retry_after_max``); then, or at once for any other answer, the event is dead-lettered.
    """

    url: str
    secret: str
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_tries: int = 8
    backoff_initial: float = 10.0
    backoff_max: float = 3600.0
    retry_after_max: float = 86400.0
    batch_size: int = 20  # events claimed per pass

    def __post_init__(self) -> None:
        check_url("PROVISION_WEBHOOK_URL", self.url)
        check_webhook_secret("PROVISION_WEBHOOK_SECRET", self.secret)
        if self.max_tries < 1 or not self.connect_timeout > 0 or not self.read_timeout > 0:
            raise InvalidInputError("WebhookSettings", "max_tries must be >= 1 and timeouts > 0")

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookSettings(url={self.url!r}, max_tries={self.max_tries})"


def check_webhook_secret(field: str, value: str) -> str:
    """A ``whsec_...`` secret whose rest is the base64 of 24 to 64 bytes (Standard Webhooks)."""
    problem = ("must be 'whsec_' followed by the base64 of 24 to 64 random bytes (e.g. "
               "python -c \"import base64,os; print('whsec_'+base64.b64encode(os.urandom(32)).decode())\")")
    if not isinstance(value, str) or not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise InvalidInputError(field, problem)
    try:
        raw = base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(field, problem) from None
    if not 24 <= len(raw) <= 64:
        raise InvalidInputError(field, problem)
    return value


def webhook_settings_from_env(environ: Mapping[str, str] | None = None) -> WebhookSettings | None:
    """``PROVISION_WEBHOOK_URL`` and ``PROVISION_WEBHOOK_SECRET`` (both or neither), or None."""
    env = environment(environ)
    url, secret = env.get("PROVISION_WEBHOOK_URL") or None, env.get("PROVISION_WEBHOOK_SECRET") or None
    if url is None and secret is None:
        return None
    if url is None or secret is None:
        missing = "PROVISION_WEBHOOK_URL" if url is None else "PROVISION_WEBHOOK_SECRET"
        raise InvalidInputError(missing, "must be set too: webhooks need both a URL and a secret")
    timeout = env.get("PROVISION_WEBHOOK_TIMEOUT_SECONDS")
    seconds = (BOUNDS["PROVISION_WEBHOOK_TIMEOUT_SECONDS"].parse("PROVISION_WEBHOOK_TIMEOUT_SECONDS", timeout)
               if timeout else WebhookSettings.read_timeout)
    return WebhookSettings(url=url, secret=secret, read_timeout=seconds,
                           connect_timeout=min(seconds, WebhookSettings.connect_timeout))
