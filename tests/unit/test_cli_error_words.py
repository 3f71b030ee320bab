"""Engine errors in API words, rendered by the CLI in its own (issue 18 item 7): ``engine.cli.failures``."""
from __future__ import annotations

import pytest

from engine.cli import failures
from engine.errors import (
    AttemptNotFoundError,
    DuplicateConnectionError,
    InvalidInputError,
    ProvisionError,
    SchemaOutdatedError,
)


@pytest.mark.parametrize(("error", "api_words", "cli_words"), [
    (InvalidInputError("db_url", "cannot use database URL"), "db_url: cannot", "--db: cannot"),
    (InvalidInputError("callback_wait_s", "too long"), "callback_wait_s: too", "--callback-wait: too"),
    (DuplicateConnectionError("acme", "quickbooks", "abcd", "NEW"), "replace=True", "--replace"),
    (AttemptNotFoundError("abcd1234"), "Engine.list()", "`provision list`"),
    (InvalidInputError("redeliver", "give an event sequence number or failed=True (not both)"),
     "failed=True", "--failed"),
    (SchemaOutdatedError("the database schema is not up to date",
                         hint="Apply the migrations first: open_engine(db_url, migrate=True)."),
     "migrate=True", "`provision db upgrade` (with the same --db)"),
])
def test_the_same_error_speaks_api_and_cli(error: ProvisionError, api_words: str, cli_words: str) -> None:
    assert api_words in str(error) and cli_words not in str(error)
    shown = failures.cli_message(error)
    assert cli_words in shown and api_words not in shown
    document = failures.error_document(error, str(error))["error"]
    assert cli_words in document["message"] + (document["hint"] or "")
    if isinstance(error, InvalidInputError) and error.field in failures.FLAGS:
        assert document["field"] == failures.FLAGS[error.field]
