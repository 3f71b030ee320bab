"""POST /instances validation, the quick flow, listing with tags, PUT / PATCH / DELETE."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy (MYPYPATH=tests) names it simulator.sim_fixtures; pytest_plugins loads it
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]  # the fixtures of this directory (see sim_fixtures.py)


QUICK = {
    "element": {"key": "quickbooks"},
    "configuration": {"oauth.callback.url": "http://app.example/cb", "quickbooks.datasource": "QBO",
                      "oauth.user.refresh_interval": "13046400", "quickbooks.realm.id": "123",
                      "oauth.user.token": "qyprdUSER", "oauth.user.token.secret": "SECRET",
                      "oauth.api.key": "dev-key", "oauth.api.secret": "dev-secret",
                      "oauth.user.refresh_time": "1500000000000", "use_sandbox": "true"},
    "tags": ["QBO Token"], "name": "QBO Token", "externalAuthentication": "initial",
}


def quick(name: str = "QBO Token", tags: Iterable[str] = ("QBO Token",)) -> dict[str, Any]:
    return {**QUICK, "name": name, "tags": list(tags)}


def test_quick_provision(api: Api) -> None:
    created = api.create(quick())
    assert created.status_code == 200, created.text
    instance = created.json()
    assert instance["externalAuthentication"] == "initial"
    assert instance["configuration"]["oauth.user.token"] == "qyprdUSER"
    assert instance["configuration"]["oauth.user.refresh_time"] == "1500000000000"
    assert instance["configuration"]["oauth.api.key"] == "********"


def test_quick_provision_on_element_path(api: Api) -> None:
    body = {k: v for k, v in quick().items() if k != "element"}
    assert api.call("POST", "/elements/quickbooks/instances", json=body).status_code == 200


def test_missing_configuration_names_every_entry(api: Api) -> None:
    oauth1 = api.create({"element": {"key": "quickbooks"}, "configuration": {"oauth.api.key": "k"},
                         "providerData": {}})
    assert oauth1.status_code == 400
    assert oauth1.json()["message"] == \
        "Missing required configuration entries: oauth.api.secret, oauth.callback.url"
    empty_quick = api.create({"element": {"key": "quickbooks"}, "externalAuthentication": "initial"})
    assert empty_quick.json()["message"] == (
        "Missing required configuration entries: oauth.api.key, oauth.api.secret, oauth.user.token, "
        "oauth.user.token.secret, quickbooks.realm.id")
    sfdc = api.create({"element": {"key": "sfdc"}, "configuration": {"oauth.api.secret": ""}})
    assert sfdc.json()["message"] == \
        "Missing required configuration entries: oauth.api.key, oauth.api.secret, oauth.callback.url"


def test_bad_bodies(api: Api) -> None:
    assert api.call("POST", "/instances", data="not json").status_code == 400
    assert api.create({"configuration": {}}).status_code == 400  # no element


def test_names_and_tags_are_sanitised(api: Api) -> None:
    instance = api.create(quick(name="<a href='x'>churros-xss</a>", tags=["<b>t</b>"])).json()
    assert instance["name"] == "churros-xss" and instance["tags"] == ["t"]


def test_list_and_tags_filter(api: Api) -> None:
    a = api.create(quick(tags=["attempt:1", "env:test"])).json()
    b = api.create(quick(tags=["attempt:2", "env:test"])).json()
    assert b["id"] > a["id"]
    assert [i["id"] for i in api.call("GET", "/instances").json()] == [a["id"], b["id"]]
    second = api.call("GET", "/instances", params={"tags[]": "attempt:2"}).json()
    assert [i["id"] for i in second] == [b["id"]]
    both = api.call("GET", "/instances", params=[("tags[]", "env:test"), ("tags[]", "attempt:1")]).json()
    assert [i["id"] for i in both] == [a["id"]]
    assert api.call("GET", "/instances", params={"tags[]": "none"}).json() == []
    assert len(api.call("GET", "/elements/quickbooks/instances").json()) == 2
    assert api.call("GET", "/elements/sfdc/instances").json() == []


def test_get_put_patch_delete(api: Api) -> None:
    instance = api.create(quick(tags=["a", "b"])).json()
    path = f"/instances/{instance['id']}"
    assert api.call("GET", path).json() == instance
    for bad in ("/instances/999999", "/instances/abc"):
        missing = api.call("GET", bad)
        assert missing.status_code == 404
        assert missing.json()["message"] == "Invalid Element Instance Id provided."

    patched = api.call("PATCH", path, json={"tags": ["c"], "configuration": {"extra": True}}).json()
    assert patched["tags"] == ["c"]
    assert patched["configuration"]["extra"] == "true"
    assert patched["configuration"]["oauth.user.token"] == "qyprdUSER"  # merged, not replaced

    # PUT the GET result back with a change: masks are not taken as new secrets.
    current = api.call("GET", path).json()
    current["configuration"]["oauth.user.token"] = "qyprdNEW"
    put = api.call("PUT", path, json={"name": "renamed", "configuration": current["configuration"]}).json()
    assert put["name"] == "renamed" and put["tags"] == ["c"]
    stored = api.sandbox.store.instances[instance["id"]].configuration
    assert stored["oauth.api.key"] == "dev-key" and stored["oauth.user.token"] == "qyprdNEW"
    assert "providerData" not in put

    assert api.call("DELETE", path).json() == {}
    assert api.call("GET", path).status_code == 404
    assert api.call("DELETE", path).status_code == 404
    assert api.call("PATCH", path, json={}).status_code == 404


def test_put_reauthenticate_oauth2(api: Api) -> None:
    first = api.create(api.oauth2_body(api.oauth2_consent())).json()
    old_refresh = api.sandbox.store.instances[first["id"]].configuration["oauth.user.refresh_token"]
    cb = api.oauth2_consent()
    again = api.call("PUT", f"/instances/{first['id']}", params={"reAuthenticate": "true"},
                     json={"providerData": {"code": cb["code"]}})
    assert again.status_code == 200, again.text
    assert "providerData" not in again.json()
    new_refresh = again.json()["configuration"]["oauth.user.refresh_token"]
    assert new_refresh != old_refresh
    assert api.sandbox.store.valid_refresh_tokens(first["id"]) == [new_refresh]
    replay = api.call("PUT", f"/instances/{first['id']}", params={"reAuthenticate": "true"},
                      json={"providerData": {"code": cb["code"]}})
    assert replay.status_code == 400
    assert api.call("GET", f"/instances/{first['id']}").json()["configuration"][
        "oauth.user.refresh_token"] == new_refresh


def test_put_reauthenticate_oauth1(api: Api) -> None:
    token, cb = api.oauth1_consent()
    first = api.create(api.oauth1_body(token, cb)).json()
    token2, cb2 = api.oauth1_consent()
    provider_data = api.oauth1_body(token2, cb2)["providerData"]
    again = api.call("PUT", f"/instances/{first['id']}", params={"reAuthenticate": "true"},
                     json={"providerData": provider_data})
    assert again.status_code == 200, again.text
    config = again.json()["configuration"]
    assert config["oauth.user.token"] != first["configuration"]["oauth.user.token"]
    assert config["quickbooks.realm.id"] == cb2["realmId"]
