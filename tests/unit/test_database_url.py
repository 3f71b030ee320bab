"""One "cannot use database URL" error (issue 14 item 7): every way in gives the same answer.

A URL SQLAlchemy cannot parse fails before any connection is made, so these tests touch no database.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.cli.main import main as cli_main
from engine.config import open_database
from engine.errors import InvalidInputError
from engine.security.rotation import rotate_keys
from engine.wiring import open_repository

BAD_URL = "not a database url"
KEY_ENV = {"PROVISION_SECRET_KEY": "unused-the-url-fails-first"}


@pytest.mark.parametrize("opener", [
    open_database,
    lambda url: open_repository(url, environ=KEY_ENV),
    lambda url: rotate_keys(url, environ=KEY_ENV),
], ids=["open_database", "open_repository", "rotate_keys"])
def test_every_opener_names_the_parameter_and_the_fix(opener: Callable[[str], Any]) -> None:
    # The Python API speaks its own words (db_url), not the CLI's (--db): issue 18 item 7.
    with pytest.raises(InvalidInputError) as caught:
        opener(BAD_URL)
    assert caught.value.field == "db_url"
    assert caught.value.message.startswith("db_url: cannot use database URL (ArgumentError: ")
    assert "--" not in str(caught.value)
    assert caught.value.hint == "e.g. sqlite:///provision.db or postgresql+psycopg://user@host/db"


def test_db_upgrade_exits_2_with_the_same_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["db", "upgrade", "--db", BAD_URL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("provision: error: --db: cannot use database URL (ArgumentError: ")
    assert "(hint: e.g. sqlite:///provision.db" in err
