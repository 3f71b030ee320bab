"""Fault specs, runtime faults (count / rate / retry_after), hold-after-commit delays, the request log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import requests

from sandbox import ENDPOINTS, Faults, parse_delay, parse_fail, start

if TYPE_CHECKING:  # mypy (MYPYPATH=tests) names it simulator.sim_fixtures; pytest_plugins loads it
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]  # the fixtures of this directory (see sim_fixtures.py)


def test_endpoint_names_are_the_contract() -> None:
    assert ENDPOINTS == ("oauth_token", "oauth_url", "consent", "create_instance", "list_instances",
                         "update_instance", "provider_token", "provider_check")


def test_parse_good_specs() -> None:
    assert parse_delay("create_instance=1.5") == ("create_instance", 1.5)
    endpoint, rule = parse_fail("oauth_url=0.25:429")
    assert endpoint == "oauth_url" and rule.rate == 0.25 and rule.status == 429
    assert parse_fail("consent=1")[1].status == 503


@pytest.mark.parametrize("parse, spec, fragment", [
    (parse_delay, "nope=1", "'nope'"),
    (parse_delay, "create_instance", "ENDPOINT=SECONDS"),
    (parse_delay, "create_instance=abc", "'abc'"),
    (parse_delay, "create_instance=-1", "at least 0"),
    (parse_delay, "create_instance=inf", "finite"),
    (parse_fail, "bogus=0.5", "'bogus'"),
    (parse_fail, "create_instance=1.5", "between 0 and 1"),
    (parse_fail, "create_instance=x", "'x'"),
    (parse_fail, "create_instance=0.5:abc", "'abc'"),
    (parse_fail, "create_instance=0.5:200", "400-599"),
    (parse_fail, "create_instance", "ENDPOINT=RATE[:STATUS]"),
])
def test_parse_errors_name_the_bad_part(parse: Callable[[str], object], spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(spec)
    assert fragment in str(info.value)


def test_start_rejects_bad_specs() -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        start(port=0, delays=["nope=1"])


def test_runtime_fail_count_and_retry_after(api: Api) -> None:
    set_faults = api.call("POST", "/_sandbox/faults", json={
        "fail": {"create_instance": {"rate": 1.0, "status": 503, "count": 2, "retry_after": 1}}})
    assert set_faults.status_code == 200
    body = {"element": {"key": "sfdc"}, "configuration": {}}
    for _ in range(2):
        failed = api.create(body)
        assert failed.status_code == 503 and failed.headers["Retry-After"] == "1"
        assert set(failed.json()) == {"requestId", "message"}
    assert api.create(body).status_code == 400  # served normally again (missing configuration)

    api.sandbox.set_faults(fails={"list_instances": {"rate": 1, "status": 429, "retry_after": 3}})
    throttled = api.call("GET", "/instances")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    api.sandbox.set_faults(fails=["list_instances=1:500"])
    broken = api.call("GET", "/instances")
    assert broken.status_code == 500 and "Retry-After" not in broken.headers
    api.sandbox.set_faults()
    assert api.call("GET", "/instances").status_code == 200


def test_injected_failure_performs_no_effect(api: Api) -> None:
    api.sandbox.set_faults(fails={"oauth_token": 1.0})
    params = {"apiKey": "k", "apiSecret": "s", "callbackUrl": api.callback}
    assert api.call("GET", "/elements/quickbooks/oauth/token", params=params).status_code == 503
    assert api.sandbox.store.request_tokens == {}


def test_bad_runtime_faults_are_400_and_change_nothing(api: Api) -> None:
    api.sandbox.set_faults(delays={"consent": 0.01})
    bad: object
    for bad in ({"delay": {"nope": 1}}, {"fail": {"create_instance": {"rate": 2}}}, {"other": {}}, [1],
                {"fail": {"create_instance": {"count": -1}}}, {"patch": {"nope": {"a": 1}}},
                {"patch": {"provider_token": {}}}, {"patch": {"provider_token": {"<x>": 1}}}):
        answer = api.call("POST", "/_sandbox/faults", json=bad)
        assert answer.status_code == 400, bad
        assert answer.json()["message"].startswith("Invalid faults")
    assert api.call("GET", "/_sandbox/faults").json() == {"delay": {"consent": 0.01}, "fail": {}, "patch": {}}


def test_seeded_rate_is_reproducible() -> None:
    def statuses(seed: int) -> list[int]:
        with start(port=0, fails=["list_instances=0.5"], seed=seed) as sandbox:
            headers = {"Authorization": "User sandbox-user-secret, Organization sandbox-org-secret"}
            return [requests.get(sandbox.base_url + "/instances", headers=headers, timeout=5).status_code
                    for _ in range(12)]

    first = statuses(7)
    assert first == statuses(7)
    assert set(first) == {200, 503}


def test_rate_zero_never_fails() -> None:
    faults = Faults.build(fails={"consent": 0.0})
    assert all(faults.decide_failure("consent") is None for _ in range(50))


def test_delay_holds_after_commit(api: Api) -> None:
    """A client that gives up while the response is held still leaves the instance created."""
    api.sandbox.set_faults(delays={"create_instance": 0.5})
    body = {"element": {"key": "quickbooks"}, "externalAuthentication": "initial", "tags": ["attempt:x"],
            "configuration": {"oauth.api.key": "k", "oauth.api.secret": "s", "oauth.user.token": "t",
                              "oauth.user.token.secret": "ts", "quickbooks.realm.id": "1",
                              "use_sandbox": "true"}}
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.call("POST", "/instances", json=body, timeout=0.15)
    # A generous bound (it was 0.4 s and timed out on a loaded machine): this is about the instance.
    found = api.call("GET", "/instances", params={"tags[]": "attempt:x"}, timeout=5)
    assert len(found.json()) == 1


def test_request_log_content_and_redaction(api: Api) -> None:
    api.sandbox.clear_requests()
    api.call("GET", "/instances", params=[("tags[]", "a"), ("tags[]", "b")])
    api.create({"element": {"key": "sfdc"}, "configuration": {"oauth.api.key": "k"}})
    requests.post(api.root + "/_sandbox/consent?oauth_token=x", data={"decision": "approve"}, timeout=5)
    api.call("GET", "/_sandbox/faults")  # inspection endpoints are not logged
    log = requests.get(api.root + "/_sandbox/requests", timeout=5).json()
    assert log == api.sandbox.requests()
    assert [(e["method"], e["path"], e["endpoint"], e["status"]) for e in log] == [
        ("GET", "/elements/api-v2/instances", "list_instances", 200),
        ("POST", "/elements/api-v2/instances", "create_instance", 400),
        ("POST", "/_sandbox/consent", "consent", 400),
    ]
    assert log[0]["query"] == {"tags[]": ["a", "b"]} and log[0]["body"] is None
    assert log[1]["body"] == {"element": {"key": "sfdc"}, "configuration": {"oauth.api.key": "k"}}
    assert log[2]["body"] == {"decision": "approve"} and log[2]["query"] == {"oauth_token": ["x"]}
    assert all(len(e["request_id"]) == 24 for e in log)
    text = str(log)
    assert "sandbox-user-secret" not in text and "Authorization" not in text
    assert requests.delete(api.root + "/_sandbox/requests", timeout=5).status_code == 200
    assert api.sandbox.requests() == []
