"""Where the platform is and how to talk to it: ``ClientSettings`` from ``ELEMENTS_*`` variables.

The defaults that the engine shares with the local simulator (its address, base path and secrets)
are repeated here rather than imported, because ``engine`` must not depend on ``sandbox``;
``tests/unit/test_config_defaults.py`` checks that they agree.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.config.bounds import numbers_from_env
from engine.config.checks import PRINTABLE_RE, check_url
from engine.config.environment import environment, proxies_for
from engine.errors import InvalidInputError

#: The local simulator's address, base path and secrets (``sandbox.defaults`` holds the same values).
SANDBOX_HOST = "127.0.0.1"
SANDBOX_PORT = 8040
BASE_PATH = "/elements/api-v2"
SANDBOX_USER_SECRET = "sandbox-user-secret"
SANDBOX_ORG_SECRET = "sandbox-org-secret"
DEFAULT_BASE_URL = f"http://{SANDBOX_HOST}:{SANDBOX_PORT}{BASE_PATH}"
_CLIENT_ENV = {
    "connect_timeout": "PROVISION_CONNECT_TIMEOUT_SECONDS",
    "read_timeout": "PROVISION_READ_TIMEOUT_SECONDS",
}


@dataclass(frozen=True)
class ClientSettings:
    """Where the platform is and how to talk to it."""

    base_url: str
    user_secret: str
    org_secret: str
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_body_bytes: int = 1_000_000  # hostile or broken servers must not exhaust memory
    # Root of the provider's token endpoints; None means Intuit's real ones (engine.clients.provider).
    provider_root: str | None = None
    # Read once from REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE and the proxy variables by
    # client_settings_from_env: requests would re-read them on every call (bench/README.md).
    ca_bundle: str | None = None
    proxies: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never show the secrets
        timeouts = f"({self.connect_timeout}, {self.read_timeout})"
        return f"ClientSettings(base_url={self.base_url!r}, timeouts={timeouts})"


def client_settings_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientSettings:
    """Platform location and secrets from ``ELEMENTS_*`` variables (defaults: the local sandbox)."""
    env = environment(environ)
    base_url = overrides.pop("base_url", None) or env.get("ELEMENTS_BASE_URL") or DEFAULT_BASE_URL
    check_url("ELEMENTS_BASE_URL", base_url)
    for field_name, value in numbers_from_env(env, _CLIENT_ENV).items():
        overrides.setdefault(field_name, value)
    provider_root = env.get("PROVISION_PROVIDER_URL") or None
    if provider_root is not None:
        check_url("PROVISION_PROVIDER_URL", provider_root)
    else:
        # The local sandbox serves the provider endpoints beside the platform; anything else is real.
        parts = urlsplit(base_url)
        if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.path.rstrip("/").endswith(BASE_PATH):
            provider_root = f"{parts.scheme}://{parts.netloc}/_provider"
    overrides.setdefault("provider_root", provider_root)
    if "ca_bundle" not in overrides:
        overrides["ca_bundle"] = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None
    if "proxies" not in overrides:
        overrides["proxies"] = proxies_for(base_url)
    secrets: dict[str, Any] = {}
    for field, var, default in (("user_secret", "ELEMENTS_USER_SECRET", SANDBOX_USER_SECRET),
                                ("org_secret", "ELEMENTS_ORG_SECRET", SANDBOX_ORG_SECRET)):
        value = overrides.pop(field, None) or env.get(var) or default
        # It goes into an HTTP header on every call; never echoed, it is a secret.
        if not isinstance(value, str) or len(value) > 1024 or not PRINTABLE_RE.fullmatch(value):
            raise InvalidInputError(var, "must be 1 to 1024 printable characters (no control or bidi "
                                    "characters); the value is not shown")
        secrets[field] = value
    return ClientSettings(base_url=base_url, **secrets, **overrides)
