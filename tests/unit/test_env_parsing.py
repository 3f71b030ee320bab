"""Every number from the environment is finite and in its documented range (issue 16, finding 10).

``PROVISION_LEASE_SECONDS=nan`` used to be accepted, after which every tick failed. Each numeric
variable now has a range (``engine.config.BOUNDS``, printed in the README's environment list); a
value outside it is an ``InvalidInputError`` naming the variable, the rule and the value.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.config
from engine.config import (
    BOUNDS,
    EngineSettings,
    RetryPolicy,
    client_settings_from_env,
    database_settings_from_env,
    engine_settings_from_env,
    retry_policy_from_env,
    serve_settings_from_env,
    webhook_settings_from_env,
    worker_metrics_settings_from_env,
)
from engine.errors import InvalidInputError, ProvisionError

README = Path(__file__).resolve().parents[2] / "README.md"
# Which settings field each variable lands in, and how to read it back.
FIELDS = {
    "PROVISION_LEASE_SECONDS": ("engine", "lease_s"),
    "PROVISION_BATCH_SIZE": ("engine", "batch_size"),
    "PROVISION_POLL_SECONDS": ("engine", "poll_max_s"),
    "PROVISION_CALLBACK_WAIT_SECONDS": ("engine", "callback_wait_s"),
    "PROVISION_RENEWAL_MAX_LEAD_SECONDS": ("engine", "renewal_max_lead_s"),
    "PROVISION_COMMIT_WINDOW_SECONDS": ("engine", "commit_window_s"),
    "PROVISION_CREATE_SETTLE_SECONDS": ("engine", "create_settle_s"),
    "PROVISION_DB_TRANSACTION_IDLE_SECONDS": ("engine", "transaction_idle_s"),
    "PROVISION_CONNECT_TIMEOUT_SECONDS": ("client", "connect_timeout"),
    "PROVISION_READ_TIMEOUT_SECONDS": ("client", "read_timeout"),
    "PROVISION_RETRY_IN_PROCESS_ATTEMPTS": ("policy", "in_process_attempts"),
    "PROVISION_RETRY_DURABLE_INITIAL_SECONDS": ("policy", "durable_initial"),
    "PROVISION_RETRY_DURABLE_MAX_SECONDS": ("policy", "durable_max"),
    "PROVISION_RETRY_BUDGET": ("policy", "budget"),
    "PROVISION_WEBHOOK_TIMEOUT_SECONDS": ("webhook", "read_timeout"),
    "PROVISION_SERVE_THREADS": ("serve", "threads"),
    "PROVISION_SERVE_CONNECTION_LIMIT": ("serve", "connection_limit"),
    "PROVISION_SERVE_IDLE_TIMEOUT_SECONDS": ("serve", "idle_timeout_s"),
    "PROVISION_SERVE_REFUSED_BURST": ("serve", "refused_burst"),
    "PROVISION_SERVE_REFUSED_PER_MINUTE": ("serve", "refused_per_minute"),
    "PROVISION_WORKER_METRICS_PORT": ("worker", "port"),
    "PROVISION_SQLITE_BUSY_TIMEOUT_SECONDS": ("database", "sqlite_busy_timeout_s"),
    "PROVISION_DB_POOL_SIZE": ("database", "pool_size"),
}
# A clean base: the proxies lookup reads the process environment, nothing else does.
BASE = {"ELEMENTS_BASE_URL": "http://127.0.0.1:8040/elements/api-v2"}
WEBHOOK = {"PROVISION_WEBHOOK_URL": "https://app.example/hooks",
           "PROVISION_WEBHOOK_SECRET": "whsec_" + "QUJD" * 8}


def plain(number: float) -> str:
    """A range edge as messages and the README write it: 2592000, 0.01."""
    return str(int(number)) if float(number).is_integer() else str(number)


def parse(env: dict[str, str]) -> dict[str, Any]:
    """Every settings object the engine builds from ``env``."""
    return {"engine": engine_settings_from_env(env), "client": client_settings_from_env({**BASE, **env}),
            "policy": retry_policy_from_env(env), "webhook": webhook_settings_from_env({**WEBHOOK, **env}),
            "serve": serve_settings_from_env(env), "worker": worker_metrics_settings_from_env(env),
            "database": database_settings_from_env(env)}


def test_every_numeric_variable_has_a_range_and_a_field() -> None:
    assert set(BOUNDS) == set(FIELDS)
    # A numeric variable added to engine.config later must get a range too (config is the only reader),
    # in whichever module of the package reads it.
    modules = sorted(Path(engine.config.__file__).parent.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "bounds.py", "engine_settings.py", "serve.py"}
    source = "\n".join(m.read_text(encoding="utf-8") for m in modules)
    suffixes = "SECONDS|SIZE|BUDGET|ATTEMPTS|COUNT|LIMIT|PORT|BYTES"
    numeric = set(re.findall(rf"PROVISION_(?:[A-Z]+_)*(?:{suffixes})\b",
                             source))
    assert numeric <= set(BOUNDS), sorted(numeric - set(BOUNDS))


@pytest.mark.parametrize("var", sorted(BOUNDS))
@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e300", "1e400", "-1", "soon", "1,5", "0x10",
                                 "1_0", " ", "\u0661", "9" * 5000, "5\x00", "5\u202e"])
def test_bad_values_are_refused_naming_variable_rule_and_value(var: str, raw: str) -> None:
    bound = BOUNDS[var]
    with pytest.raises(InvalidInputError) as err:
        parse({var: raw})
    message = str(err.value)
    assert err.value.field == var and message.startswith(f"{var}: must be ")
    assert f"from {plain(bound.minimum)} to {plain(bound.maximum)}" in message
    assert repr(raw[:40]) in message


@pytest.mark.parametrize("var", sorted(BOUNDS))
def test_just_outside_the_range_is_refused_and_the_edges_are_accepted(var: str) -> None:
    bound, (which, field) = BOUNDS[var], FIELDS[var]
    step = 1 if bound.kind is int else 0.001
    for outside in (bound.minimum - step, bound.maximum + step):
        with pytest.raises(InvalidInputError, match=re.escape(var)):
            parse({var: repr(outside) if bound.kind is float else str(int(outside))})
    lo, hi = plain(bound.minimum), plain(bound.maximum)
    # The durable maximum may not be below the initial wait: move the other one along.
    lo_env = {"PROVISION_RETRY_DURABLE_INITIAL_SECONDS": lo} if var.endswith("DURABLE_MAX_SECONDS") else {}
    hi_env = {"PROVISION_RETRY_DURABLE_MAX_SECONDS": hi} if var.endswith("DURABLE_INITIAL_SECONDS") else {}
    # The transaction idle bound may not exceed the lease: move the lease along.
    hi_env = {"PROVISION_LEASE_SECONDS": hi} if var == "PROVISION_DB_TRANSACTION_IDLE_SECONDS" else hi_env
    assert getattr(parse({**lo_env, var: lo})[which], field) == bound.minimum
    assert getattr(parse({**hi_env, var: f" {hi} "})[which], field) == bound.maximum


def test_unset_or_empty_variables_keep_the_defaults() -> None:
    assert parse({}) == parse({var: "" for var in BOUNDS})
    assert parse({})["engine"] == EngineSettings()


def test_durable_max_below_durable_initial_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="PROVISION_RETRY_DURABLE_MAX_SECONDS: must be at least"):
        retry_policy_from_env({"PROVISION_RETRY_DURABLE_INITIAL_SECONDS": "60",
                               "PROVISION_RETRY_DURABLE_MAX_SECONDS": "10"})


def test_readme_lists_every_range() -> None:
    text = README.read_text(encoding="utf-8")
    for var, bound in BOUNDS.items():
        lines = [line for line in text.splitlines() if f"`{var}`" in line]
        assert any(f"{plain(bound.minimum)} to {plain(bound.maximum)}" in line for line in lines), var


@pytest.mark.parametrize("kw", [{"lease_s": math.nan}, {"lease_s": math.inf}, {"poll_max_s": "5"},
                                {"batch_size": 2.5}, {"batch_size": True}, {"commit_window_s": -0.1},
                                {"concurrency": 0}, {"callback_wait_s": None}])
def test_engine_settings_built_in_code_are_checked_too(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match=f"EngineSettings.{next(iter(kw))}"):
        EngineSettings(**kw)


@pytest.mark.parametrize("kw", [{"durable_max": math.inf}, {"durable_initial": math.nan},
                                {"durable_multiplier": "2"}, {"budget": 1.5}, {"in_process_attempts": 0}])
def test_retry_policy_built_in_code_is_checked_too(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match=f"RetryPolicy.{next(iter(kw))}"):
        RetryPolicy(**kw)


@pytest.mark.parametrize("var", ["ELEMENTS_USER_SECRET", "ELEMENTS_ORG_SECRET"])
@pytest.mark.parametrize("raw", ["se\u202ecret", "sec\nret", "x" * 1025])
def test_platform_secrets_refuse_control_and_bidi_characters_without_echoing(var: str, raw: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        client_settings_from_env({**BASE, var: raw})
    assert err.value.field == var and raw[:5] not in str(err.value)


def test_provider_url_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="PROVISION_PROVIDER_URL"):
        client_settings_from_env({**BASE, "PROVISION_PROVIDER_URL": "ftp://x\u202e"})


# Text the parser may meet: numbers in every spelling, and junk around them.
NUMBERISH = st.one_of(
    st.text(max_size=12),
    st.floats().map(repr),
    st.floats().map(str),
    st.integers().map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: f"{n}e{n % 400}"),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nan", "inf", "-inf", "+inf", "infinity", "1e309", "0", "-0", "0.0", ".5", "5.",
                     "1e-400"]),
)


def _assert_valid(env: dict[str, str]) -> None:
    try:
        built = parse(env)
    except ProvisionError:
        return
    for var, raw in env.items():
        if raw:
            which, field = FIELDS[var]
            value = getattr(built[which], field)
            bound = BOUNDS[var]
            assert isinstance(value, bound.kind) and not isinstance(value, bool)
            assert math.isfinite(value) and bound.minimum <= value <= bound.maximum, (var, raw, value)


@settings(max_examples=300, deadline=None)
@given(var=st.sampled_from(sorted(BOUNDS)), raw=NUMBERISH)
def test_one_variable_parses_to_a_valid_setting_or_a_provision_error(var: str, raw: str) -> None:
    _assert_valid({var: raw})


@settings(max_examples=100, deadline=None)
@given(env=st.dictionaries(st.sampled_from(sorted(BOUNDS)), NUMBERISH, max_size=len(BOUNDS)))
def test_any_environment_parses_to_valid_settings_or_a_provision_error(env: dict[str, str]) -> None:
    _assert_valid(env)
