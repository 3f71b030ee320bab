"""The platform's own background refresh (issue 15, must-have 3, the simulator half), driven by the
sandbox's injectable clock and ``POST /_sandbox/platform-refresh``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests

from sandbox import start

if TYPE_CHECKING:
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]

T0 = 1_800_000_000.0


class Clock:
    """The sandbox's clock, moved by hand (epoch seconds)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(clock: Clock) -> Iterator[Any]:
    from simulator.sim_fixtures import Api  # noqa: PLC0415 - the plugin module, loaded by pytest

    with start(port=0, clock=clock) as sim:
        yield Api(sim)


def _oauth2_instance(api: Api) -> dict[str, Any]:
    answer = api.create(api.oauth2_body(api.oauth2_consent()))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _refresh(api: Api) -> list[dict[str, Any]]:
    answer = api.call("POST", "/_sandbox/platform-refresh")
    assert answer.status_code == 200
    return list(answer.json())


def _config(api: Api, instance_id: int) -> dict[str, Any]:
    return dict(api.call("GET", f"/instances/{instance_id}").json()["configuration"])


def _client_refresh(api: Api, token: str) -> requests.Response:
    return requests.post(api.root + "/_provider/oauth2/tokens/bearer", auth=("dev-client", "client-secret"),
                         data={"grant_type": "refresh_token", "refresh_token": token}, timeout=5)


def test_platform_refreshes_when_due_and_rotates_the_token(timed: Api, clock: Clock) -> None:
    instance = _oauth2_instance(timed)
    before = instance["configuration"]
    assert before["oauth.user.refresh_time"] == str(int(T0 * 1000))
    assert before["oauth.user.refresh_interval"] == "3600"
    assert _refresh(timed) == []  # not due yet
    clock.now += 3599
    assert _refresh(timed) == []
    clock.now += 1
    assert _refresh(timed) == [{"id": instance["id"], "refreshed": True}]
    after = _config(timed, instance["id"])
    assert after["oauth.user.refresh_token"] != before["oauth.user.refresh_token"]
    assert after["oauth.user.token"] != before["oauth.user.token"]
    assert after["oauth.user.refresh_time"] == str(int(clock.now * 1000))
    # Whoever still holds the old refresh token now gets invalid_grant: the two-owner race of issue 15.
    stale = _client_refresh(timed, before["oauth.user.refresh_token"])
    assert stale.status_code == 400 and stale.json() == {"error": "invalid_grant"}
    assert _refresh(timed) == []  # the schedule moved forward with refresh_time
    assert timed.sandbox.store.instances[instance["id"]].valid


def test_a_rejected_platform_refresh_makes_the_instance_invalid(timed: Api, clock: Clock) -> None:
    instance = _oauth2_instance(timed)
    token = instance["configuration"]["oauth.user.refresh_token"]
    # Someone else rotated the token, and the instance was not told.
    assert _client_refresh(timed, token).status_code == 200
    clock.now += 3600
    assert _refresh(timed) == [{"id": instance["id"], "refreshed": False, "error": "invalid_grant"}]
    assert timed.call("GET", f"/instances/{instance['id']}").json()["valid"] is False
    assert _refresh(timed) == []  # an invalid instance is not retried


def test_no_refresh_token_is_presented_twice_when_the_client_pushes(timed: Api, clock: Clock) -> None:
    """A client that refreshes ahead of the platform and pushes the result keeps one owner per token."""
    instance = _oauth2_instance(timed)
    token = instance["configuration"]["oauth.user.refresh_token"]
    for _ in range(5):
        clock.now += 3000  # the client renews 10 minutes ahead of the platform's schedule
        fresh = _client_refresh(timed, token).json()
        token = fresh["refresh_token"]
        pushed = timed.call("PATCH", f"/instances/{instance['id']}", json={"configuration": {
            "oauth.user.refresh_token": token, "oauth.user.token": fresh["access_token"],
            "oauth.user.refresh_time": str(int(clock.now * 1000))}})
        assert pushed.status_code == 200
        assert _refresh(timed) == []
    clock.now += 3600  # the client stops: the platform takes over
    assert timed.sandbox.platform_refresh()[0]["refreshed"] is True  # the in-process form of the endpoint
    presented = [t for t, _, _ in timed.sandbox.refresh_presentations()]
    assert len(presented) == len(set(presented)) == 6
    assert [who for _, who, _ in timed.sandbox.refresh_presentations()] == ["client"] * 5 + ["platform"]


def test_auto_refresh_runs_before_each_request(clock: Clock) -> None:
    from simulator.sim_fixtures import Api  # noqa: PLC0415

    with start(port=0, clock=clock, auto_refresh=True) as sim:
        api = Api(sim)
        instance = _oauth2_instance(api)
        clock.now += 3600
        config = _config(api, instance["id"])  # the GET itself triggers the due refresh
        assert config["oauth.user.refresh_token"] != instance["configuration"]["oauth.user.refresh_token"]


def test_disabled_instances_are_not_refreshed_and_status_is_settable(timed: Api, clock: Clock) -> None:
    instance = _oauth2_instance(timed)
    path = f"/_sandbox/instances/{instance['id']}/status"
    assert timed.call("POST", path, json={"disabled": True}).json() == {
        "id": instance["id"], "valid": True, "disabled": True}
    clock.now += 7200
    assert _refresh(timed) == []
    assert timed.call("POST", path, json={"disabled": False, "valid": False}).status_code == 200
    got = timed.call("GET", f"/instances/{instance['id']}").json()
    assert got["valid"] is False and got["disabled"] is False
    assert timed.call("POST", path, json={"valid": "no"}).status_code == 400
    assert timed.call("POST", path, json={}).status_code == 400
    assert timed.call("POST", "/_sandbox/instances/999/status", json={"valid": True}).status_code == 404

