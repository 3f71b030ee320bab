"""Authorization header, request ids, unknown elements and routes."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import pytest

from sandbox import DEFAULT_ORG_SECRET as ORG
from sandbox import DEFAULT_USER_SECRET as USER

if TYPE_CHECKING:  # mypy (MYPYPATH=tests) names it simulator.sim_fixtures; pytest_plugins loads it
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]  # the fixtures of this directory (see sim_fixtures.py)

INVALID = "Invalid Organization or User secret, or invalid Element token provided."


@pytest.mark.parametrize("header", [
    f"User {USER}, Organization {ORG}",
    f"Organization {ORG}, User {USER}",
    f"Organization {ORG},User {USER}",
    f"User {USER}, Organization {ORG}, Element someInstanceToken",
])
def test_valid_header_variants_are_accepted(api: Api, header: str) -> None:
    assert api.call("GET", "/instances", auth=header).status_code == 200


def test_header_name_is_case_insensitive(api: Api) -> None:
    response = api.call("GET", "/instances", auth=None,
                        headers={"authorization": f"Organization {ORG}, User {USER}"})
    assert response.status_code == 200


@pytest.mark.parametrize("header", [
    None, "", f"User {USER}", f"User wrong, Organization {ORG}", f"User {USER}, Organization wrong",
    f"Bearer {USER}",
])
def test_bad_or_missing_header_is_401_with_platform_text(api: Api, header: str | None) -> None:
    response = api.call("GET", "/instances", auth=header)
    assert response.status_code == 401
    body = response.json()
    assert body == {"requestId": response.headers["Elements-Request-Id"], "message": INVALID}


def test_oauth_token_accepts_no_header_but_rejects_a_wrong_one(api: Api) -> None:
    params = {"apiKey": "k", "apiSecret": "s", "callbackUrl": api.callback}
    assert api.call("GET", "/elements/quickbooks/oauth/token", auth=None, params=params).status_code == 200
    wrong = api.call("GET", "/elements/quickbooks/oauth/token", auth="User x, Organization y", params=params)
    assert wrong.status_code == 401
    assert wrong.json()["message"] == INVALID


def test_request_id_shape_on_every_response(api: Api) -> None:
    before = int(time.time())
    for response in (api.call("GET", "/instances"), api.call("GET", "/instances", auth=None),
                     api.call("GET", "/health"), api.call("GET", "/nope")):
        request_id = response.headers["Elements-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{24}", request_id)
        assert abs(int(request_id[:8], 16) - before) <= 5


def test_unknown_element_is_404_naming_the_key(api: Api) -> None:
    response = api.call("GET", "/elements/nosuch/oauth/token",
                        params={"apiKey": "k", "apiSecret": "s", "callbackUrl": api.callback})
    assert response.status_code == 404
    assert "nosuch" in response.json()["message"]
    created = api.create({"element": {"key": "nosuch"}, "configuration": {}})
    assert created.status_code == 404 and "nosuch" in created.json()["message"]


def test_unknown_route_and_method_are_json_errors(api: Api) -> None:
    missing = api.call("GET", "/nothing-here")
    assert missing.status_code == 404 and missing.json()["requestId"]
    wrong_verb = api.call("DELETE", "/instances")
    assert wrong_verb.status_code == 405
    assert "GET" in wrong_verb.headers["Allow"]


def test_health(api: Api) -> None:
    assert api.call("GET", "/health", auth=None).json() == {"status": "ok"}
