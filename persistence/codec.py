"""How the repository seals the secrets it stores; the composition root injects the real codec.

``Codec`` is all the repository needs (seal on write, open on read); ``RekeyCodec`` adds what
``persistence.rekey`` needs to re-encrypt stored blobs under a new key. Persistence knows no
cipher: ``engine.security.crypto.FernetCodec`` implements both.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class Codec(Protocol):
    """Turns a JSON-able dict into opaque bytes and back (``engine.security.crypto.FernetCodec``)."""

    def seal(self, data: dict[str, Any]) -> bytes:
        """Encrypt ``data``."""
        ...

    def open(self, blob: bytes) -> dict[str, Any]:
        """Decrypt ``blob``; raises (a ``SecretKeyError``) when the key does not fit."""
        ...


class RekeyCodec(Codec, Protocol):
    """A codec that can tell a blob sealed under its newest key and re-seal an older one."""

    def is_current(self, blob: bytes) -> bool:
        """True when ``blob`` is sealed under the newest key already."""
        ...

    def rotate(self, blob: bytes) -> bytes | None:
        """``blob`` re-sealed under the newest key; None when no configured key opens it."""
        ...



@runtime_checkable
class ReloadableCodec(Codec, Protocol):
    """A codec whose keys can be read again (a key file that a rotation changed)."""

    def reload(self) -> bool:
        """Read the keys again if their source changed; True when the keys changed."""
        ...
