"""Secrets at rest: Fernet encryption of the attempt blob and inbox params (issue 5/6).

The key comes from ``PROVISION_SECRET_KEY`` (a Fernet key; several comma-separated keys allow
rotation: the first encrypts, all decrypt). For the embedded SQLite default, a key file is created
beside the database with mode 0600 and a warning is logged, so ``provision demo`` needs no setup.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from engine.config import ENV_KEY
from engine.errors import SecretKeyError
from engine.security.masking import MASK, is_secret_key

log = logging.getLogger(__name__)


def digest(text: str) -> str:
    """SHA-256 hex of a high-entropy value (state nonce, request token, callback params).

    Unkeyed on purpose: the inputs carry >= 128 bits of randomness, and a keyed hash would break
    every waiting attempt when the encryption key is rotated.
    """
    return hashlib.sha256(text.encode()).hexdigest()


class FernetCodec:
    """Encrypts JSON blobs with Fernet (AES-128-CBC + HMAC-SHA256, authenticated)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no encryption key given", hint=f"Set {ENV_KEY} to a Fernet key.")
        try:
            self._newest = Fernet(keys[0])
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                f"{ENV_KEY} is not a valid Fernet key (32 url-safe base64-encoded bytes)",
                hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'",
            ) from exc

    def seal(self, data: dict[str, Any]) -> bytes:
        """Encrypt ``data`` (JSON) under the first key."""
        return self._fernet.encrypt(json.dumps(data, separators=(",", ":")).encode())

    def open(self, blob: bytes) -> dict[str, Any]:
        """Decrypt with any configured key."""
        try:
            value = json.loads(self._fernet.decrypt(bytes(blob)))
        except InvalidToken as exc:
            raise SecretKeyError(
                "stored secrets cannot be decrypted with the configured key",
                hint=f"Use the {ENV_KEY} (or key file) the database was written with.",
            ) from exc
        assert isinstance(value, dict)
        return value

    def is_current(self, blob: bytes) -> bool:
        """True when ``blob`` is encrypted under the first key already (``persistence.rekey``)."""
        try:
            self._newest.decrypt(bytes(blob))
        except InvalidToken:
            return False
        return True

    def rotate(self, blob: bytes) -> bytes | None:
        """``blob`` re-encrypted under the first key; None when no configured key opens it."""
        try:
            return self._fernet.rotate(bytes(blob))
        except InvalidToken:
            return None


def parse_keys(text: str) -> list[bytes]:
    """Split a comma-separated key list (first = current)."""
    return [k.strip().encode() for k in text.split(",") if k.strip()]


def load_codec(db_path: Path | None, keys_text: str | None) -> FernetCodec:
    """The codec for a database: env key, else the key file beside a SQLite file (created once)."""
    if keys_text:
        return FernetCodec(parse_keys(keys_text))
    if db_path is None:
        raise SecretKeyError(
            f"{ENV_KEY} is not set",
            hint="Set it to a Fernet key; only the embedded SQLite database gets a key file automatically.",
        )
    key_file = db_path.with_name(db_path.name + ".key")
    if not key_file.exists():
        # Write the whole key aside, then link it into place: a second process starting at the same
        # moment either wins the link or reads the complete file, never an empty one.
        tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            pass  # another process created it first; use theirs
        finally:
            tmp.unlink()
        log.warning(
            "created encryption key file %s (mode 0600); back it up, or set %s instead", key_file, ENV_KEY
        )
    return FernetCodec(parse_keys(key_file.read_text()))


# --- redaction by value ----------------------------------------------------------------------------

MIN_SCRUB_LEN = 6  # shorter values (booleans, "0") would mask innocent text


def secret_values(data: Any, *, inside: bool = False) -> set[str]:
    """Every string leaf of ``data`` (an attempt's decrypted secrets) stored under a secret-ish key.

    A key is secret-ish when ``is_secret_key`` says so (``oauth.api.secret``,
    ``request_token_secret``, ``callback.oauth_verifier``, ``callback.code``, ``instance_token``, and
    everything under ``user_tokens``); the consent URL and the public configuration (api key,
    callback URL) are not collected.
    """
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            hit = inside or is_secret_key(str(key))
            found |= secret_values(value, inside=hit)
    elif isinstance(data, (list, tuple)):
        for value in data:
            found |= secret_values(value, inside=inside)
    elif inside and isinstance(data, str) and len(data) >= MIN_SCRUB_LEN:
        found.add(data)
    return found


def scrub(value: Any, needles: set[str]) -> Any:
    """A copy of ``value`` with every occurrence of a string in ``needles`` replaced by ``MASK``.

    The last line of defence for text that came from outside (a platform error message that echoes
    a token, a provider message): whatever its key, a known secret value is never shown.
    """
    if not needles:
        return value
    if isinstance(value, str):
        for needle in sorted(needles, key=len, reverse=True):
            if needle in value:
                value = value.replace(needle, MASK)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, needles) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, needles) for v in value]
    return value
