"""Connect links over real HTTP (issue 10/12 must-have 6): ``/connect/<token>`` on the public
receiver redirects (302) to the attempt's consent URL once, then says "This link is no longer
valid"; it expires with the attempt's deadline on the fake clock; only its hash is stored."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from testkit import QBO, TEST_KEY, consent, on_waitress

from engine import Engine, FakeClock
from engine.config import EngineSettings, engine_settings_from_env
from engine.errors import InvalidInputError, InvalidTransitionError
from engine.web.callback_app import make_app
from persistence.schema import attempts
from states import State

PROVISION = str(Path(sys.executable).with_name("provision"))


@pytest.fixture
def served(sqlite_url: str, engine_on: Callable[..., Engine], clock: FakeClock,
           clocked_sandbox: Any) -> Iterator[tuple[Engine, str]]:
    engine = engine_on(sqlite_url, clock=clock, sim=clocked_sandbox)
    # The production server of `provision serve` (waitress), on a free port.
    with on_waitress(make_app(engine)) as port:
        yield engine, f"http://127.0.0.1:{port}"


def waiting(engine: Engine) -> str:
    a = engine.start("quickbooks", "books", flow="oauth2", customer="acme-42", **QBO)
    engine.run_until_idle()
    assert engine.get(a.id).state is State.REDIRECTED
    return a.id


def test_link_redirects_once_to_the_consent_url_and_the_customer_connects(
        served: tuple[Engine, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, base = served
    attempt_id = waiting(engine)
    link = engine.connect_link(attempt_id, base_url=base)
    token = link.rsplit("/", 1)[1]
    assert link.startswith(f"{base}/connect/") and len(token) == 43
    with engine.repo.engine.connect() as conn:
        stored = conn.execute(sa.select(attempts.c.connect_token_hash)).scalar()
    assert stored and token not in stored and len(stored) == 64  # hashed, not the token
    assert requests.head(link, timeout=5).status_code == 200  # a mail scanner does not spend it
    first = requests.get(link, allow_redirects=False, timeout=5)
    assert first.status_code == 302 and first.headers["Cache-Control"] == "no-store"
    consent_url = engine.redirect_url(engine.get(attempt_id))
    assert first.headers["Location"] == consent_url
    again = requests.get(link, allow_redirects=False, timeout=5)
    assert again.status_code == 410 and "This link is no longer valid" in again.text
    forged = requests.get(f"{base}/connect/{'A' * 43}", timeout=5)
    assert forged.status_code == 410 and "This link is no longer valid" in forged.text
    # The customer follows the consent URL to the end.
    # Never logged: the receiver's log lines (waitress keeps no access log; the app logs refusals
    # by reason only) carry no token.
    assert token not in caplog.text and "connect link refused" in caplog.text
    engine.handle_callback(consent(consent_url or ""))
    engine.run_until_idle()
    assert engine.get(attempt_id).state is State.PROVISIONED
    with pytest.raises(InvalidTransitionError, match="REDIRECTED"):
        engine.connect_link(attempt_id, base_url=base)


def test_link_expires_with_the_deadline_and_a_new_link_revokes_the_old(
        served: tuple[Engine, str], clock: FakeClock) -> None:
    engine, base = served
    attempt_id = waiting(engine)
    old = engine.connect_link(attempt_id, base_url=base)
    new = engine.connect_link(attempt_id, base_url=base)
    assert requests.get(old, allow_redirects=False, timeout=5).status_code == 410
    deadline = engine.get(attempt_id).deadline_at
    assert deadline is not None
    clock.advance((deadline - clock()).total_seconds() + 1)
    expired = requests.get(new, allow_redirects=False, timeout=5)
    assert expired.status_code == 410 and "This link is no longer valid" in expired.text


def test_public_url_is_validated_and_required(sqlite_url: str, engine_on: Callable[..., Engine]) -> None:
    with pytest.raises(InvalidInputError, match="PROVISION_PUBLIC_URL"):
        engine_settings_from_env({"PROVISION_PUBLIC_URL": "javascript:alert(1)"})
    with pytest.raises(InvalidInputError, match="public_url"):
        EngineSettings(public_url="not a url")
    settings = engine_settings_from_env({"PROVISION_PUBLIC_URL": "https://connect.example.com/"})
    assert settings.public_url == "https://connect.example.com/"
    engine = engine_on(sqlite_url)
    attempt_id = waiting(engine)
    with pytest.raises(InvalidInputError, match="PROVISION_PUBLIC_URL"):
        engine.connect_link(attempt_id)
    configured = engine_on(sqlite_url, settings=settings)
    assert configured.connect_link(attempt_id).startswith("https://connect.example.com/connect/")


def test_cli_show_connect_link(sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    engine = engine_on(sqlite_url)
    attempt_id = waiting(engine)
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": sqlite_url,
           "ELEMENTS_BASE_URL": sandbox.base_url, "PATH": str(Path(sys.executable).parent)}
    plain = subprocess.run([PROVISION, "show", attempt_id], capture_output=True, text=True, env=env,
                           timeout=60)
    assert plain.returncode == 0 and "/connect/" not in plain.stdout  # a plain show revokes no link
    missing = subprocess.run([PROVISION, "show", attempt_id, "--connect-link"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert missing.returncode == 2 and "PROVISION_PUBLIC_URL" in missing.stderr
    env["PROVISION_PUBLIC_URL"] = "https://connect.example.com"
    shown = subprocess.run([PROVISION, "--json", "show", attempt_id, "--connect-link"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    link = json.loads(shown.stdout)["connect_link"]
    assert link.startswith("https://connect.example.com/connect/")
    assert engine.open_connect_link(link.rsplit("/", 1)[1]) == engine.redirect_url(engine.get(attempt_id))
