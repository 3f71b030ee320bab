"""``provision keys rotate``: re-encrypt every stored secret under a new key (issues 5/6, 16).

Rotation is a protocol that the running workers take part in (their heartbeat rows, migration
0006, name the key ids they hold; a key id is the first 8 hex digits of the key's SHA-256):

1. **Publish** the new key beside the old. Key file (``<db>.key`` beside a SQLite database): a new
   key is generated and the file rewritten as ``NEW,OLD`` (temp file + rename, mode 0600) before
   any row changes. ``PROVISION_SECRET_KEY``: the operator sets ``NEW,OLD`` for every process and
   restarts the workers (an environment cannot change under a running process).
2. **Wait** until every live worker writes with NEW: workers reload the key file every few seconds
   (``engine.core.heartbeat``) and advertise ``NEW,OLD``. A worker that does not within
   ``wait_s`` stops the rotation with an error naming it, before any row changes (run it again).
3. **Re-encrypt** every row (``persistence.rekey``: batches, compare-and-set per row, ``version``
   untouched, rows already under NEW skipped), so an interrupted run (even ``kill -9``) is simply
   run again: the key file still says ``NEW,OLD`` and the rerun finishes with the same NEW. Then
   release the rows a worker holding OLD alone quarantined meanwhile (a rolling restart with
   ``PROVISION_SECRET_KEY``: no worker start would release them any more).
4. **Retire** OLD (the key file becomes ``NEW``) only when no row needs it (every row opened) and
   no live worker still writes with it (checked again just before).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

from engine.config import ENV_KEY, engine_settings_from_env, open_database, secret_keys_from_env
from engine.errors import InvalidInputError, SecretKeyError
from engine.security.crypto import FernetCodec, key_id, parse_keys
from persistence.rekey import RowsKeptChangingError, reencrypt, release_quarantined
from persistence.workers import DEAD_AFTER_LEASES, WorkerRow, live_workers

DEFAULT_BATCH = 200
DEFAULT_WAIT_S = 60.0  # workers reload the key file every few seconds (engine.core.heartbeat)


@dataclass
class RotationReport:
    """What a rotation did; ``complete`` is False while some row could not be decrypted."""

    mode: str  # "env" or "key_file"
    attempts: int = 0  # attempts blobs (secrets, callback_secrets) re-encrypted by this run
    callbacks: int = 0  # callbacks.params rows re-encrypted by this run
    already_current: int = 0  # rows found under the new key already (an earlier, interrupted run)
    unreadable: int = 0  # rows no configured key opens: left untouched
    retried: int = 0  # rows a concurrent writer changed under us, read again
    released: int = 0  # quarantined attempts made due again (a worker holding OLD alone parked them)
    key_file: str | None = None
    key_id: str = ""  # the new key's id (what `provision workers` shows)
    workers: int = 0  # live workers, every one writing with the new key
    retired: bool = False  # the key file now holds only the new key

    @property
    def complete(self) -> bool:
        """True when every row is now encrypted under the new key."""
        return self.unreadable == 0

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {**asdict(self), "complete": self.complete}


def key_file_for(db_path: Path) -> Path:
    """Where ``engine.security.crypto.load_codec`` keeps the key of a SQLite file."""
    return db_path.with_name(db_path.name + ".key")


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace ``path`` atomically with ``keys`` (comma-separated), mode 0600, fsynced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b",".join(keys) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: a crash leaves the old file or the new one, never half of one
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Workers:
    """The live workers as the rotation sees them (``workers`` heartbeat rows, database clock)."""

    def __init__(self, db: sa.Engine, dead_after_s: float, wait_s: float,
                 sleep: Callable[[float], None], monotonic: Callable[[], float]) -> None:
        self.db, self.dead_after, self.wait_s = db, timedelta(seconds=dead_after_s), wait_s
        self.sleep, self.monotonic = sleep, monotonic

    def lagging(self, new_id: str) -> list[WorkerRow]:
        """Live workers that do not write with the key ``new_id`` yet."""
        return [w for w in live_workers(self.db, self.dead_after) if w.key_ids[:1] != (new_id,)]

    def await_key(self, new_id: str, fix: str) -> int:
        """Wait until every live worker writes with ``new_id``; how many there are. ``SecretKeyError``
        naming the laggards after ``wait_s``: nothing was re-encrypted, run the rotation again."""
        deadline = self.monotonic() + self.wait_s
        while True:
            lagging = self.lagging(new_id)
            if not lagging:
                return len(live_workers(self.db, self.dead_after))
            if self.monotonic() >= deadline:
                names = ", ".join(f"{w.worker_id} (keys {','.join(w.key_ids) or '-'})" for w in lagging[:5])
                raise SecretKeyError(
                    f"{len(lagging)} live worker(s) still write with another key than {new_id}: {names}",
                    hint=f"{fix} Then run `provision keys rotate` again; no row was changed.")
            self.sleep(1.0)


def _reencrypt(db: sa.Engine, keys: list[bytes], report: RotationReport, batch: int) -> None:
    """Re-seal every row under ``keys[0]`` (``persistence.rekey``) and count it in ``report``."""
    codec = FernetCodec(keys)
    try:
        tally = reencrypt(db, codec, batch=batch)
    except RowsKeptChangingError as exc:
        raise SecretKeyError(str(exc), hint="Run `provision keys rotate` again.") from None
    for name, value in asdict(tally).items():
        setattr(report, name, value)
    report.released = release_quarantined(db, codec)


def rotate_keys(
    db_url: str, *, environ: Mapping[str, str] | None = None, batch: int = DEFAULT_BATCH,
    wait_s: float = DEFAULT_WAIT_S, sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> RotationReport:
    """Rotate the encryption key of the database at ``db_url`` (see the module docstring)."""
    from persistence.database import sqlite_path  # noqa: PLC0415
    from persistence.migrate import upgrade  # noqa: PLC0415

    keys_text = secret_keys_from_env(environ)
    if batch < 1:
        raise InvalidInputError("--batch-size", f"must be at least 1, got {batch}")
    dead_after_s = DEAD_AFTER_LEASES * engine_settings_from_env(environ).lease_s
    db = open_database(db_url)
    try:
        workers = Workers(db, dead_after_s, wait_s, sleep, monotonic)
        path = sqlite_path(db.url)
        if path is not None and not path.exists():
            raise InvalidInputError("db_url", f"no database at {path}: nothing to rotate")
        if path is not None:
            upgrade(db)
        if keys_text:
            keys = parse_keys(keys_text)
            if len(keys) < 2:
                raise InvalidInputError(
                    ENV_KEY,
                    "holds one key; to rotate, set it to NEW,OLD (the new key first)",
                    hint="Generate NEW with: python -c 'from cryptography.fernet import "
                    "Fernet; print(Fernet.generate_key().decode())'",
                )
            report = RotationReport("env", key_id=key_id(keys[0]))
            report.workers = workers.await_key(report.key_id, f"Restart each of them with {ENV_KEY}=NEW,OLD.")
            _reencrypt(db, keys, report, batch)
            return report
        if path is None:
            raise SecretKeyError(f"{ENV_KEY} is not set",
                                 hint="Set it to NEW,OLD (the new key first) and run the rotation again.")
        key_file = key_file_for(path)
        if not key_file.exists():
            raise SecretKeyError(f"no key file {key_file} and {ENV_KEY} is not set",
                                 hint="Nothing was ever encrypted with a key this command can find.")
        keys = parse_keys(key_file.read_text())
        FernetCodec(keys)  # validate before touching anything
        if len(keys) == 1:
            # NEW goes first and OLD stays, written before any row changes: every row stays readable.
            keys = [Fernet.generate_key(), keys[0]]
            write_key_file(key_file, keys)
        # else: an interrupted rotation left NEW,OLD...: finish it with the same NEW.
        report = RotationReport("key_file", key_file=str(key_file), key_id=key_id(keys[0]))
        report.workers = workers.await_key(
            report.key_id, f"They reload {key_file} every few seconds; a stuck one needs a restart.")
        _reencrypt(db, keys, report, batch)
        if report.complete and not workers.lagging(report.key_id):
            write_key_file(key_file, keys[:1])  # no row and no live worker needs OLD any more
            report.retired = True
        return report
    finally:
        db.dispose()
