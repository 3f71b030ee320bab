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


def key_id(key: bytes) -> str:
    """A key's public name: the first 8 hex digits of its SHA-256 (shown in heartbeats, never the key)."""
    return hashlib.sha256(key.strip()).hexdigest()[:8]


class KeyRing:
    """The codec of a running engine: a ``FernetCodec`` that can be reloaded from the key file.

    ``provision keys rotate`` publishes NEW,OLD in the key file; every worker reloads it (``reload``,
    called from its heartbeat) and from then on writes with NEW and advertises the key ids it holds,
    so the rotation knows when it is safe to re-encrypt and to retire OLD. Keys from the environment
    cannot change under a running process: there, workers are restarted with NEW,OLD.
    """

    def __init__(self, keys: list[bytes], key_file: Path | None = None) -> None:
        self._codec = FernetCodec(keys)
        self._ids = tuple(key_id(k) for k in keys)
        self._file = key_file
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self._file.stat() if self._file is not None else None
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size) if st is not None else None

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the keys held, the one that encrypts first."""
        return self._ids

    def reload(self) -> bool:
        """Read the key file again if it changed; True when the keys changed. A bad file is ignored
        (logged): the keys held so far stay in use rather than none."""
        stamp = self._stat()
        if self._file is None or stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        keys = parse_keys(self._file.read_text())
        try:
            codec = FernetCodec(keys)
        except SecretKeyError:
            log.error("key file %s does not hold a valid key list; keeping the keys loaded before",
                      self._file)
            return False
        ids = tuple(key_id(k) for k in keys)
        changed = ids != self._ids
        self._codec, self._ids = codec, ids
        if changed:
            log.warning("reloaded the encryption keys from %s: now holding %s", self._file, ", ".join(ids))
        return changed

    def seal(self, data: dict[str, Any]) -> bytes:
        """Encrypt under the first key of the key file as it is now.

        One ``stat`` per seal: a short-lived process (``provision start``) that loaded OLD before a
        rotation published NEW,OLD must not write with OLD after the rotation began (it has no
        heartbeat for the rotation to wait for). The file is read again only when it changed.
        """
        self.reload()
        return self._codec.seal(data)

    def open(self, blob: bytes) -> dict[str, Any]:
        """Decrypt with any key held now."""
        return self._codec.open(blob)

    def is_current(self, blob: bytes) -> bool:
        """See ``FernetCodec.is_current``."""
        return self._codec.is_current(blob)

    def rotate(self, blob: bytes) -> bytes | None:
        """See ``FernetCodec.rotate``."""
        return self._codec.rotate(blob)


def parse_keys(text: str) -> list[bytes]:
    """Split a comma-separated key list (first = current)."""
    return [k.strip().encode() for k in text.split(",") if k.strip()]


def load_codec(db_path: Path | None, keys_text: str | None, *, has_data: bool = False) -> KeyRing:
    """The codec for a database: env key, else the key file beside a SQLite file.

    The key file is created only for a database that holds no secrets yet (``has_data`` False): a
    missing key file beside stored secrets means the key was lost or moved, and a fresh key would
    make every row unreadable, so that is an error.
    """
    if keys_text:
        return KeyRing(parse_keys(keys_text))
    if db_path is None:
        raise SecretKeyError(
            f"{ENV_KEY} is not set",
            hint="Set it to a Fernet key; only the embedded SQLite database gets a key file automatically.",
        )
    key_file = db_path.with_name(db_path.name + ".key")
    if not key_file.exists() and has_data:
        raise SecretKeyError(
            f"the key file {key_file} is missing but the database {db_path} holds encrypted secrets",
            hint=f"Put the key file back (it was created beside the database), or set {ENV_KEY} to the key "
                 "the database was written with; a new key would make every stored secret unreadable.",
        )
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
    return KeyRing(parse_keys(key_file.read_text()), key_file)


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
