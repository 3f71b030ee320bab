"""The defaults the engine repeats from the sandbox agree with ``sandbox.defaults`` (issue 14 item 7).

``engine`` may not import ``sandbox``, so ``engine.config`` keeps its own copy of the simulator's
address, base path and secrets; an engine and a sandbox started with no options must still find
each other.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from engine import config
from engine.security.masking import MASK
from sandbox import defaults


def test_the_repeated_constants_agree() -> None:
    assert (config.SANDBOX_HOST, config.SANDBOX_PORT, config.BASE_PATH) == (
        defaults.DEFAULT_HOST, defaults.DEFAULT_PORT, defaults.BASE_PATH)
    assert (config.SANDBOX_USER_SECRET, config.SANDBOX_ORG_SECRET) == (
        defaults.DEFAULT_USER_SECRET, defaults.DEFAULT_ORG_SECRET)
    assert MASK == defaults.MASK


def test_an_empty_environment_points_at_the_sandbox_default_address() -> None:
    settings = config.client_settings_from_env({})
    assert settings.base_url == f"http://{defaults.DEFAULT_HOST}:{defaults.DEFAULT_PORT}{defaults.BASE_PATH}"
    assert (settings.user_secret, settings.org_secret) == (
        defaults.DEFAULT_USER_SECRET, defaults.DEFAULT_ORG_SECRET)
    # The sandbox also plays Intuit: its token endpoints sit beside the platform on the same address.
    assert settings.provider_root is not None
    root = urlsplit(settings.provider_root)
    assert (root.hostname, root.port) == (defaults.DEFAULT_HOST, defaults.DEFAULT_PORT)
    for path in (defaults.PROVIDER_BEARER_PATH, defaults.PROVIDER_RECONNECT_PATH):
        assert path.startswith(root.path + "/")
