"""What real Cloud Elements clients rely on (issue 15; elements-api.md §14a): paging, the trailing slash,
object-valued configuration, the element endpoints, JSON on every path, and the sandbox-company rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from sandbox import start

if TYPE_CHECKING:
    from simulator.sim_fixtures import Api

pytest_plugins = ["sim_fixtures"]

PAGE_HEADERS = ("Elements-Next-Page-Token", "Elements-Returned-Count", "Elements-Total-Count")


def quick(name: str, tags: list[str], **config: Any) -> dict[str, Any]:
    return {"element": {"key": "quickbooks"}, "externalAuthentication": "initial", "name": name, "tags": tags,
            "configuration": {"oauth.api.key": "dev-key", "oauth.api.secret": "dev-secret",
                              "oauth.user.token": f"qyprd-{name}", "oauth.user.token.secret": "S",
                              "quickbooks.realm.id": "42", **config}}


def test_get_instances_is_paged(api: Api) -> None:
    for n in range(5):
        assert api.create(quick(f"i{n}", ["paged"] if n != 2 else [], use_sandbox="true")).status_code == 200
    first = api.call("GET", "/instances", params={"tags[]": "paged", "pageSize": 3})
    assert [i["name"] for i in first.json()] == ["i0", "i1", "i3"]
    assert first.headers["Elements-Returned-Count"] == "3" and first.headers["Elements-Total-Count"] == "4"
    exposed = {h.strip() for h in first.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed >= set(PAGE_HEADERS)
    token = first.headers["Elements-Next-Page-Token"]
    second = api.call("GET", "/instances", params={"tags[]": "paged", "pageSize": 3, "nextPage": token})
    assert [i["name"] for i in second.json()] == ["i4"]
    assert "Elements-Next-Page-Token" not in second.headers
    assert second.headers["Elements-Returned-Count"] == "1"
    assert api.call("GET", "/instances", params={"pageSize": 0}).status_code == 400
    assert api.call("GET", "/instances", params={"nextPage": "not a token"}).status_code == 400


def test_default_page_size_is_a_sandbox_option() -> None:
    with start(port=0, page_size=2) as sim:
        from simulator.sim_fixtures import Api  # noqa: PLC0415 - the plugin module, loaded by pytest

        api = Api(sim)
        for n in range(3):
            api.create(quick(f"d{n}", [], use_sandbox="true"))
        answer = api.call("GET", "/instances")
        assert len(answer.json()) == 2 and answer.headers["Elements-Total-Count"] == "3"
        assert "Elements-Next-Page-Token" in answer.headers
    with pytest.raises(ValueError, match="page_size"):
        start(port=0, page_size=0)


def test_trailing_slash_and_object_valued_configuration(api: Api) -> None:
    body = quick("slash", ["s"], use_sandbox="true", **{"extra.oauth.params": {"prompt": "consent"}})
    answer = api.call("POST", "/instances/", json=body)  # elements-connect posts with the slash
    assert answer.status_code == 200, answer.text
    assert answer.json()["configuration"]["extra.oauth.params"] == '{"prompt":"consent"}'
    assert [i["name"] for i in api.call("GET", "/instances/").json()] == ["slash"]


def test_element_and_metadata_name_the_required_configuration(api: Api) -> None:
    element = api.call("GET", "/elements/quickbooks").json()
    assert element["key"] == "quickbooks" and element["id"] == 39
    required = {c["key"] for c in element["configuration"] if c["required"]}
    assert required == {"oauth.api.key", "oauth.api.secret", "oauth.callback.url"}
    optional = {c["key"] for c in element["configuration"] if not c["required"]}
    assert {"use_sandbox", "connect.to.sandbox"} <= optional
    metadata = api.call("GET", "/elements/39/metadata").json()
    assert metadata["key"] == "quickbooks" and metadata["configuration"] == element["configuration"]
    assert metadata["authentication"]["types"] == ["oauth1", "oauth2"]
    assert api.call("GET", "/elements/nope").status_code == 404
    assert api.call("GET", "/elements/quickbooks", auth=None).status_code == 401


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/no/such/path", 404),
    ("DELETE", "/elements/quickbooks/oauth/token", 405),
    ("GET", "/_provider/nothing", 404),
    ("PUT", "/_provider/oauth2/tokens/bearer", 405),
    ("GET", "/instances/1001/", 404),
])
def test_every_error_is_json(api: Api, method: str, path: str, status: int) -> None:
    answer = api.call(method, path)
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("application/json"), answer.text
    assert answer.json()["message"] and answer.json()["requestId"]


def test_internal_errors_and_oversized_bodies_are_json(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import sandbox.app  # noqa: PLC0415

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setitem(sandbox.app.ROUTES, "health", sandbox.app.Route(broken, "list_instances"))
    answer = api.call("GET", "/health")
    assert answer.status_code == 500 and answer.json()["message"] == "Internal sandbox error"
    huge = api.call("POST", "/instances", data=b"x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("flag", ["use_sandbox", "connect.to.sandbox"])
def test_development_keys_need_the_sandbox_flag(api: Api, flag: str) -> None:
    refused = api.create(quick("noflag", []))
    assert refused.status_code == 400
    assert refused.json()["providerMessage"] == (
        "3100 - message=AuthorizationFailed; errorCode=003100; statusCode=403")
    assert api.create(quick("off", [], **{flag: "false"})).status_code == 400
    assert api.create(quick("on", [], **{flag: "true"})).status_code == 200
    assert api.create(quick("bool", [], **{flag: True})).status_code == 200  # JSON booleans, as sent
    # Production keys (the sandbox's convention: they start with "prod") need no flag.
    prod = quick("prod", [])
    prod["configuration"].update({"oauth.api.key": "prod-key"})
    assert api.create(prod).status_code == 200


def test_consent_flows_are_refused_without_the_flag_too(api: Api) -> None:
    token, cb = api.oauth1_consent()
    body = api.oauth1_body(token, cb)
    del body["configuration"]["use_sandbox"]
    refused = api.create(body)
    assert refused.status_code == 400 and "AuthorizationFailed" in refused.json()["providerMessage"]
    cb2 = api.oauth2_consent()
    body2 = api.oauth2_body(cb2)
    body2["configuration"]["connect.to.sandbox"] = body2["configuration"].pop("use_sandbox")
    assert api.create(body2).status_code == 200
