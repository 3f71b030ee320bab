"""Element keys checked against the platform at start, and API errors in API words (issue 18 items 5, 7).

Real engine, the sandbox over real HTTP, both database backends. The same failures through the
CLI are in tests/cli/test_cli_start_checks.py.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from testkit import QBO

from engine import Engine
from engine.errors import (
    DuplicateConnectionError,
    ElementCheckUnavailableError,
    MissingConfigurationError,
    UnknownElementError,
)


def test_an_unknown_element_is_refused_and_nothing_is_stored(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    with pytest.raises(UnknownElementError) as caught:
        engine.start("nosuchelement", "n", flow="oauth2", verify_element=True, **QBO)
    assert caught.value.field == "element" and "'nosuchelement'" in caught.value.message
    assert "verify_element=False" in (caught.value.hint or "") and "--" not in str(caught.value)
    assert engine.list() == [] and engine.counts() == {}
    # Without the check (the API's default) the key is not looked up: the attempt is stored.
    assert engine.start("nosuchelement", "n", flow="oauth2", **QBO).element_key == "nosuchelement"


def test_unknown_configuration_keys_are_a_warning_naming_the_known_ones(
        make_engine: Callable[..., Engine], caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine()
    check = engine.element_check("quickbooks", {"use_sandbx": "true", "use_sandbox": "true"})
    assert check.unknown_keys == ("use_sandbx",) and "use_sandbox" in check.known_keys
    with caplog.at_level(logging.WARNING, logger="engine"):
        started = engine.start("quickbooks", "typo", flow="oauth2", verify_element=True,
                               api_key=QBO["api_key"], api_secret=QBO["api_secret"],
                               callback_url=QBO["callback_url"],
                               config={"use_sandbox": "true", "use_sandbx": "true"})
    warning = next(r.getMessage() for r in caplog.records if "use_sandbx" in r.getMessage())
    assert "known keys" in warning and "use_sandbox" in warning and "oauth.callback.url" in warning
    assert engine.get(started.id).element_key == "quickbooks"  # a warning: the start proceeds
    assert engine.element_check("quickbooks", {"use_sandbox": "true"}).warning() is None


def test_a_platform_that_is_down_is_not_an_input_error(
        db_url: str, engine_on: Callable[..., Engine]) -> None:
    engine = engine_on(db_url, base_url="http://127.0.0.1:9/elements/api-v2", connect_timeout=1.0)
    with pytest.raises(ElementCheckUnavailableError) as caught:
        engine.start("quickbooks", "down", flow="oauth2", verify_element=True, **QBO)
    assert "verify_element=False" in (caught.value.hint or "") and "--offline" not in str(caught.value)
    assert engine.list() == []


def test_engine_errors_speak_api_words(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    with pytest.raises(MissingConfigurationError) as missing:
        engine.start("quickbooks", "q", flow="quick", config={"oauth.api.key": "k"})
    assert "config" in (missing.value.hint or "") and "--config" not in str(missing.value)
    engine.start("quickbooks", "first", flow="oauth2", customer="acme", **QBO)
    with pytest.raises(DuplicateConnectionError) as duplicate:
        engine.start("quickbooks", "second", flow="oauth2", customer="acme", **QBO)
    assert "replace=True" in (duplicate.value.hint or "") and "--replace" not in str(duplicate.value)
