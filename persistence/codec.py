"""How the repository seals the secrets blob; the engine supplies the real (encrypting) codec."""
from __future__ import annotations

from typing import Any, Protocol


class SecretCodec(Protocol):
    """Turns a JSON-able dict into opaque bytes and back (``engine.security.crypto.FernetCodec``)."""

    def seal(self, data: dict[str, Any]) -> bytes:
        """Encrypt ``data``."""
        ...

    def open(self, blob: bytes) -> dict[str, Any]:
        """Decrypt ``blob``; raises ``SecretKeyError`` when the key does not fit."""
        ...
