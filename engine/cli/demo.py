"""``provision demo``: every flow end to end against a sandbox on a free loopback port.

Needs nothing but the install: the sandbox runs in-process, the database is a temporary SQLite file
(unless ``--db`` is given) and the encryption key a throwaway one. "The user" is simulated over real
HTTP: GET the consent page, POST the form, take the 302 ``Location`` and deliver it to the engine, just
as ``provision serve`` would.
"""
from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests
from cryptography.fernet import Fernet

from engine.cli.output import attempt_dict, format_attempt, to_json
from engine.clients.transport import SANDBOX_COMPANY_HINT
from engine.config import ENV_KEY, environ_copy
from engine.core.facade import Engine
from engine.errors import HINTS, ProvisionError
from engine.wiring import open_engine
from states.model import FailureReason, State

# Only an example value: the demo delivers the redirect itself, nothing needs to listen here.
DEMO_CALLBACK_URL = "http://127.0.0.1:8050/callback"
DEMO_SECRET = "demo-app-secret"  # a throwaway value accepted by the sandbox; never printed


@dataclass(frozen=True)
class Scenario:
    """One demo attempt and what it must end as."""

    title: str
    flow: str
    expect_state: State
    api_key: str = "demo-dev-key"  # not starting with "prod": a development key
    decision: str | None = None  # approve | deny; None for the quick flow (no user)
    company: str = "sandbox"
    expect_reason: str | None = None
    expect_hint: str | None = None
    config: dict[str, str] = field(default_factory=dict)


#: The QuickBooks element's sandbox-company flag (``provision start --sandbox-company``): development
#: keys reach sandbox companies only with it (devportal quickbooksonline/tips.md).
SANDBOX_COMPANY = {"use_sandbox": "true"}
QUICK_TOKENS = {"oauth.user.token": "demo-user-token", "oauth.user.token.secret": "demo-token-secret"}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("oauth1: QuickBooks, the user approves a sandbox company", "oauth1", State.PROVISIONED,
             decision="approve", config=SANDBOX_COMPANY),
    Scenario("oauth2: QuickBooks, the user approves a sandbox company", "oauth2", State.PROVISIONED,
             decision="approve", config=SANDBOX_COMPANY),
    Scenario("quick: QuickBooks quick provision of a sandbox company with existing tokens", "quick",
             State.PROVISIONED, config={**QUICK_TOKENS, **SANDBOX_COMPANY}),
    Scenario("oauth1: the user denies access", "oauth1", State.FAILED, decision="deny",
             config=SANDBOX_COMPANY, expect_reason=FailureReason.USER_DENIED.value),
    Scenario("quick: development keys without the sandbox-company flag (3100 AuthorizationFailed)", "quick",
             State.FAILED, config=QUICK_TOKENS, expect_reason=FailureReason.PERMANENT_ERROR.value,
             expect_hint=SANDBOX_COMPANY_HINT),
    Scenario("oauth1: development keys with a production company (invalid_database)", "oauth1", State.FAILED,
             decision="approve", company="production", expect_reason=FailureReason.INVALID_DATABASE.value,
             expect_hint=HINTS["invalid_database"]),
)


def consent(consent_url: str, decision: str, company: str, timeout: float = 10.0) -> str:
    """Play the user on the consent page; returns the redirect ``Location`` (the callback URL)."""
    page = requests.get(consent_url, timeout=timeout)
    page.raise_for_status()
    answer = requests.post(consent_url, data={"decision": decision, "company": company},
                           allow_redirects=False, timeout=timeout)
    if answer.status_code != 302 or "Location" not in answer.headers:
        raise RuntimeError(f"consent page answered {answer.status_code} instead of a redirect")
    return answer.headers["Location"]


def run_scenario(engine: Engine, scenario: Scenario, say: Callable[[str], None],
                 number: int = 0) -> tuple[str, bool]:
    """Start, drive and check one scenario; returns (attempt id, as expected?)."""
    config = {"oauth.api.key": scenario.api_key, "oauth.api.secret": DEMO_SECRET, **scenario.config}
    if scenario.flow != "quick":
        config["oauth.callback.url"] = DEMO_CALLBACK_URL
    else:  # a company of its own, even on a reused --db: a live attempt holds its realm (realm_start)
        config["quickbooks.realm.id"] = str(9130350000000000 + secrets.randbelow(10**9))
    attempt = engine.start("quickbooks", f"Demo {number} {scenario.flow}", flow=scenario.flow, tags=["demo"],
                           config=config)
    say(f"  started attempt {attempt.id}")
    engine.run_until_idle()
    attempt = engine.get(attempt.id)
    if scenario.decision is not None:
        url = engine.redirect_url(attempt)
        if url is None:
            say(f"  expected REDIRECTED, attempt is {attempt.state.value}")
        else:
            # The Location carries the verifier/code: deliver it, never print it.
            location = consent(url, scenario.decision, scenario.company)
            say(f"  user chose {scenario.decision} (company: {scenario.company}) on the consent page")
            outcome = engine.handle_callback(location)
            say(f"  callback {outcome.status}: attempt is {outcome.state.value if outcome.state else '-'}")
            engine.run_until_idle()
            attempt = engine.get(attempt.id)
    ok = attempt.state is scenario.expect_state
    if scenario.expect_reason is not None:
        ok = ok and attempt.failure_reason == scenario.expect_reason
    if scenario.expect_hint is not None:
        ok = ok and (attempt.last_error or {}).get("hint") == scenario.expect_hint
    return attempt.id, ok


def run_demo(db_url: str | None, *, out: TextIO, as_json: bool = False,
             environ: dict[str, str] | None = None) -> int:
    """Run every scenario; 0 when each ended as expected, 1 otherwise."""
    import sandbox  # noqa: PLC0415 - heavy-ish and only needed here

    env = environ_copy(environ)

    def say(line: str) -> None:
        if not as_json:  # --json prints one document at the end instead
            print(line, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="provision-demo-") as tmp, sandbox.start(port=0) as sim:
        engine_env = {"ELEMENTS_BASE_URL": sim.base_url}
        if db_url is None:
            db_url = f"sqlite:///{Path(tmp) / 'demo.db'}"
            # A throwaway key for a throwaway database: no key file, no warning.
            engine_env[ENV_KEY] = Fernet.generate_key().decode()
        elif env.get(ENV_KEY):
            engine_env[ENV_KEY] = env[ENV_KEY]
        say(f"sandbox on {sim.base_url}; database {db_url if '@' not in db_url else '(given by --db)'}")
        engine = open_engine(db_url, environ=engine_env)
        results: list[dict[str, Any]] = []
        try:
            for number, scenario in enumerate(SCENARIOS, 1):
                expected = scenario.expect_state.value + (f" ({scenario.expect_reason})"
                                                          if scenario.expect_reason else "")
                say(f"\n== {number}. {scenario.title} -> expect {expected}")
                try:
                    attempt_id, ok = run_scenario(engine, scenario, say, number)
                except (ProvisionError, requests.RequestException, RuntimeError) as exc:
                    say(f"  error: {exc}")
                    results.append({"scenario": scenario.title, "flow": scenario.flow, "expected": expected,
                                    "ok": False, "error": str(exc)})
                    continue
                attempt, history = engine.get(attempt_id), engine.history(attempt_id)
                say(format_attempt(attempt, history, engine.redirect_url(attempt)))
                reason = f" ({attempt.failure_reason})" if attempt.failure_reason else ""
                say(f"  => {attempt.state.value}{reason}"
                    f": {'as expected' if ok else 'NOT as expected'}")
                results.append({"scenario": scenario.title, "flow": scenario.flow, "expected": expected,
                                "ok": ok,
                                "attempt": attempt_dict(attempt, history, engine.redirect_url(attempt))})
        finally:
            engine.close()
    passed = sum(1 for r in results if r["ok"])
    if as_json:
        print(to_json({"ok": passed == len(SCENARIOS), "scenarios": results}), file=out)
    else:
        print(f"\ndemo: {passed}/{len(SCENARIOS)} attempts ended as expected"
              f" ({'all flows work' if passed == len(SCENARIOS) else 'see above'})", file=out)
    return 0 if passed == len(SCENARIOS) else 1
