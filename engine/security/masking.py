"""The one mask and the one secret-key predicate of the engine.

Every place that hides a secret (CLI output, the status page, error texts, log records) shows the
same ``MASK`` and decides with the same ``is_secret_key`` which keys hold secrets, so the rules
cannot drift apart. ``sandbox.defaults.MASK`` repeats the mask because the sandbox is a leaf that
may not import the engine.
"""
from __future__ import annotations

MASK = "********"

#: Fragments that make a key secret, compared case-insensitively anywhere in the key:
#: ``oauth.api.secret``, ``request_token_secret``, ``oauth_verifier``, ``code``, ``refresh_token``,
#: and what other elements name their credentials (``ssh.passphrase``, ``private_key``,
#: ``credentials``, ``db.pwd``, ``request.signature``, ``client.pem``). Masking an innocent key
#: costs a line of output; showing a secret one cannot be taken back.
SECRET_KEY_HINTS: tuple[str, ...] = ("secret", "token", "password", "passwd", "pwd", "passphrase", "verifier",
                                     "code", "private", "credential", "signature", "pem")


def is_secret_key(key: str) -> bool:
    """True when values stored under ``key`` must never be shown."""
    lowered = key.lower()
    return any(hint in lowered for hint in SECRET_KEY_HINTS)
