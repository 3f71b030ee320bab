"""``provision keys rotate``: re-encrypt every stored secret under a new key (issue 5/6 item 1).

Two ways to hold the key (``engine.security.crypto``), two procedures:

- ``PROVISION_SECRET_KEY``: the user puts ``NEW,OLD`` in the variable (first encrypts, all decrypt),
  runs ``provision keys rotate``, and may drop ``OLD`` once it reports success.
- The key file beside a SQLite database (``<db>.key``): a new key is generated and the file is
  rewritten as ``NEW,OLD`` (temp file + rename, mode 0600) *before* any row changes, so that every
  row stays readable whatever happens; after the re-encryption the file is rewritten as ``NEW``.

The rows are re-encrypted by ``persistence.rekey`` (batches, compare-and-set per row, ``version``
untouched, rows already under ``NEW`` skipped), through the codec given to it: an interrupted run
is simply run again.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

from engine.config import ENV_KEY, open_database, secret_keys_from_env
from engine.errors import InvalidInputError, SecretKeyError
from engine.security.crypto import FernetCodec, parse_keys
from persistence.rekey import RowsKeptChangingError, reencrypt

DEFAULT_BATCH = 200


@dataclass
class RotationReport:
    """What a rotation did; ``complete`` is False while some row could not be decrypted."""

    mode: str  # "env" or "key_file"
    attempts: int = 0  # attempts blobs (secrets, callback_secrets) re-encrypted by this run
    callbacks: int = 0  # callbacks.params rows re-encrypted by this run
    already_current: int = 0  # rows found under the new key already (an earlier, interrupted run)
    unreadable: int = 0  # rows no configured key opens: left untouched
    retried: int = 0  # rows a concurrent writer changed under us, read again
    key_file: str | None = None

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


def _reencrypt(db: sa.Engine, keys: list[bytes], report: RotationReport, batch: int) -> None:
    """Re-seal every row under ``keys[0]`` (``persistence.rekey``) and count it in ``report``."""
    try:
        tally = reencrypt(db, FernetCodec(keys), batch=batch)
    except RowsKeptChangingError as exc:
        raise SecretKeyError(str(exc), hint="Run `provision keys rotate` again.") from None
    for name, value in asdict(tally).items():
        setattr(report, name, value)


def rotate_keys(
    db_url: str, *, environ: Mapping[str, str] | None = None, batch: int = DEFAULT_BATCH
) -> RotationReport:
    """Rotate the encryption key of the database at ``db_url`` (see the module docstring)."""
    from persistence.database import sqlite_path  # noqa: PLC0415
    from persistence.migrate import upgrade  # noqa: PLC0415

    keys_text = secret_keys_from_env(environ)
    if batch < 1:
        raise InvalidInputError("--batch-size", f"must be at least 1, got {batch}")
    db = open_database(db_url)
    try:
        path = sqlite_path(db.url)
        if path is not None and not path.exists():
            raise InvalidInputError("--db", f"no database at {path}: nothing to rotate")
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
            report = RotationReport("env")
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
        report = RotationReport("key_file", key_file=str(key_file))
        _reencrypt(db, keys, report, batch)
        if report.complete:
            write_key_file(key_file, keys[:1])
        return report
    finally:
        db.dispose()
