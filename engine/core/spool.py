"""The token spool: a rotated secret that the database would not take is kept on local disk.

Issue 16 item 1. Once the provider has rotated a token (OAuth2 refresh grant, OAuth1 Reconnect),
the old one is spent: the new one must reach the database whatever fails next. The renewal's
commit is the first write after the provider answered; the runner retries it, and when it still
fails (SQLite locked past its busy timeout, PostgreSQL restarting, a full disk) it writes the new
secrets here before giving up the tick. Every tick drains the spool into the database before it
claims anything (``RotatedTokens.drain`` in ``engine.core.kept``).

One file per kept renewal, named after the worker, the attempt and the token's ``refresh_time``;
sealed with the repository's codec (the same Fernet keys as the ``secrets`` column), mode 0600,
written to a temporary name, fsynced, renamed and the directory fsynced, so a crash leaves either
no entry or a whole one. Any worker drains every file in the directory (a restarted worker has a
new id).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from persistence.codec import Codec

log = logging.getLogger(__name__)
SUFFIX = ".spool"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class SpooledRenewal:
    """A renewal that committed nowhere yet: the secrets to merge and the columns to set with them."""

    attempt_id: str
    secrets: dict[str, Any]
    changes: dict[str, Any]
    path: Path

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return f"<SpooledRenewal {self.attempt_id} {self.path.name}>"


class TokenSpool:
    """Spool files in ``directory`` (created 0700 on first use), sealed with ``codec``.

    When the spool's own disk refuses an entry too (a full disk under both the database and the
    spool, as with the default directory beside the SQLite file), the sealed entry is kept in this
    process's memory instead: every drain tries to write it again and offers it to the database.
    """

    def __init__(self, directory: Path, *, worker_id: str, codec: Codec) -> None:
        self.directory = directory
        self.worker = _UNSAFE.sub("_", worker_id)[:80]
        self.codec = codec
        self._unwritten: dict[Path, bytes] = {}  # sealed entries the disk refused (path -> blob)

    def keep(self, attempt_id: str, secrets: dict[str, Any], changes: dict[str, Any]) -> Path:
        """Write one renewal durably (fsync of the file and of the directory); returns its path.
        An entry the disk refuses is kept in memory (see the class)."""
        stamp = changes.get("refresh_time") or 0
        path = self.directory / f"{self.worker}-{_UNSAFE.sub('_', attempt_id)}-{stamp}{SUFFIX}"
        blob = self.codec.seal({"attempt_id": attempt_id, "secrets": secrets,
                                "changes": json.loads(json.dumps(changes, default=_iso))})
        try:
            self._write(path, blob)
        except OSError as exc:
            self._unwritten[path] = blob
            log.error("token spool %s refused %s (%s); kept in memory until it can be stored",
                      self.directory, path.name, exc.strerror or type(exc).__name__)
        return path

    def _write(self, path: Path, blob: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, blob) != len(blob):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError:
            tmp.unlink(missing_ok=True)  # a torn temporary file would only take more space
            raise
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def pending(self) -> Iterator[SpooledRenewal]:
        """Every readable entry, oldest first; unreadable ones are logged and left for an operator.
        Entries kept in memory are written to disk first where it takes them now."""
        for path, blob in list(self._unwritten.items()):
            try:
                self._write(path, blob)
                del self._unwritten[path]
            except OSError:
                yield _entry(self.codec.open(blob), path)
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime):
            try:
                data = self.codec.open(path.read_bytes())
            except Exception:  # noqa: BLE001 - another key or a torn file must not stop the drain
                log.error("token spool entry %s cannot be opened with the current keys; left in place",
                          path.name)
                continue
            yield _entry(data, path)

    def done(self, entry: SpooledRenewal) -> None:
        """The entry reached the database: remove its file (or its copy in memory)."""
        self._unwritten.pop(entry.path, None)
        entry.path.unlink(missing_ok=True)


def _entry(data: dict[str, Any], path: Path) -> SpooledRenewal:
    return SpooledRenewal(str(data["attempt_id"]), dict(data["secrets"]), dict(data["changes"]), path)


def default_directory(db_url: str, configured: str | None) -> Path:
    """``configured`` (``PROVISION_SPOOL_DIR``), else beside the SQLite file, else ``./.provision-spool``."""
    if configured:
        return Path(configured)
    if db_url.startswith("sqlite:///") and db_url != "sqlite:///:memory:":
        return Path(db_url.removeprefix("sqlite:///")).parent / ".provision-spool"
    return Path.cwd() / ".provision-spool"


def renewal_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The spooled columns as the database takes them (``next_renewal_at`` back to a datetime)."""
    out = dict(changes)
    if isinstance(out.get("next_renewal_at"), str):
        out["next_renewal_at"] = datetime.fromisoformat(out["next_renewal_at"])
    return out


def _iso(value: Any) -> str:
    return str(value.isoformat())  # datetimes (next_renewal_at); parsed back by ``renewal_changes``
