"""The sandbox-company flag from the engine's side (issue 15, must-have 4): development keys reach a
QuickBooks sandbox company only when the attempt asks for it, under either of the flag's names."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from testkit import QBO, QUICK_CONFIG, consent

from engine import Engine
from engine.errors import InvalidInputError
from states import State

WITHOUT_FLAG = {k: v for k, v in QUICK_CONFIG.items() if k != "use_sandbox"}


def test_development_keys_without_the_flag_fail_with_the_fix(make_engine: Callable[..., Engine],
                                                             sandbox: Any) -> None:
    engine = make_engine()
    a = engine.start("quickbooks", "No flag", flow="quick", config=WITHOUT_FLAG)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "permanent_error"
    assert a.last_error and a.last_error["kind"] == "sandbox_company_required"
    assert "AuthorizationFailed" in (a.last_error["provider_message"] or "")
    assert "--sandbox-company" in a.last_error["hint"]
    [create] = [r for r in sandbox.requests() if r["endpoint"] == "create_instance"]
    assert "use_sandbox" not in create["body"]["configuration"]  # nothing sent unless asked for


@pytest.mark.parametrize("flag", ["use_sandbox", "connect.to.sandbox"])
def test_either_flag_name_reaches_the_sandbox_company(make_engine: Callable[..., Engine], sandbox: Any,
                                                      flag: str) -> None:
    engine = make_engine()
    quick = engine.start("quickbooks", "Quick", flow="quick", config={**WITHOUT_FLAG, flag: True})
    oauth2 = engine.start("quickbooks", "OAuth2", flow="oauth2", api_key=QBO["api_key"],
                          api_secret=QBO["api_secret"], callback_url=QBO["callback_url"],
                          config={flag: "TRUE"})
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(oauth2.id)) or ""))
    engine.run_until_idle()
    for attempt_id in (quick.id, oauth2.id):
        assert engine.get(attempt_id).state is State.PROVISIONED, engine.get(attempt_id).last_error
    bodies = [r["body"] for r in sandbox.requests() if r["endpoint"] == "create_instance"]
    assert [b["configuration"][flag] for b in bodies] == ["true", "true"]  # normalised by intake


def test_flag_values_are_checked_before_anything_is_stored(make_engine: Callable[..., Engine],
                                                           sandbox: Any) -> None:
    engine = make_engine()
    with pytest.raises(InvalidInputError) as err:
        engine.start("quickbooks", "n", flow="quick", config={**WITHOUT_FLAG, "connect.to.sandbox": "yes"})
    assert engine.list() == [] and sandbox.requests() == []
    assert "connect.to.sandbox must be true or false" in str(err.value)
    assert "use_sandbox='true'" in str(err.value)  # the API's words; the CLI says --sandbox-company
