"""Exactly-once adoption reads every page of GET /instances (issue 15, must-have 5).

The create step's first try times out after the platform created the instance; the step's next
run, a settle time later (issue 16 item 8), looks the attempt's tag up and must find the instance
although it sits on page 3.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from testkit import QUICK_CONFIG, TEST_KEY

from engine import ElementsClient, Engine, FakeClock
from engine.config import ClientSettings
from engine.wiring import open_repository
from sandbox import DEFAULT_ORG_SECRET, DEFAULT_USER_SECRET, Sandbox, start
from states import State

AUTH = {"Authorization": f"User {DEFAULT_USER_SECRET}, Organization {DEFAULT_ORG_SECRET}"}


@pytest.fixture
def paged_sandbox() -> Iterator[Sandbox]:
    """Pages of 2, cut before the tag filter: matches land on late pages, earlier pages come back empty."""
    with start(port=0, page_size=2, filter_after_paging=True) as sim:
        yield sim


def _engine(db_url: str, sim: Sandbox, waits: list[float], clock: FakeClock, **client_kw: Any) -> Engine:
    repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    settings = ClientSettings(sim.base_url, DEFAULT_USER_SECRET, DEFAULT_ORG_SECRET, read_timeout=0.4,
                              provider_root=sim.root_url + "/_provider")
    return Engine(repo, ElementsClient(settings, **client_kw), clock=clock, sleep=waits.append)


def _other_instances(sim: Sandbox, count: int) -> None:
    for n in range(count):
        body = {"element": {"key": "quickbooks"}, "externalAuthentication": "initial", "name": f"other {n}",
                "tags": ["other"] if n % 2 else [], "configuration": {**QUICK_CONFIG,
                                                                      "oauth.user.token": f"qyprd-other-{n}"}}
        assert requests.post(sim.base_url + "/instances", json=body, headers=AUTH, timeout=5).ok


def test_adopts_an_instance_on_page_3(db_url: str, paged_sandbox: Sandbox) -> None:
    sim = paged_sandbox
    _other_instances(sim, 4)  # ids 1001-1004: pages 1 and 2
    waits: list[float] = []
    clock = FakeClock()
    engine = _engine(db_url, sim, waits, clock, page_size=2)
    try:
        a = engine.start("quickbooks", "Paged", flow="quick", config=QUICK_CONFIG)
        sim.set_faults(delays={"create_instance": 1.0})  # created, then held past the read timeout
        engine.run_until_idle()
        assert (engine.get(a.id).last_error or {}).get("ambiguous_create") is True
        clock.advance(5)  # the settle time: 3 x the 0.4 s read timeout, at least 5 s
        engine.run_until_idle()
        a = engine.get(a.id)
        assert a.state is State.PROVISIONED, a.last_error
        created = [i for i in sim.store.instances.values() if a.instance_tag in i.tags]
        assert [str(i.id) for i in created] == [a.instance_id]  # one instance: adopted, not created twice
        assert a.instance_id == "1005"
        history = engine.history(a.id)
        assert any(h.note and "adopted" in h.note for h in history)
        lists = [r for r in sim.requests() if r["path"].endswith("/instances") and r["method"] == "GET"]
        assert len(lists) == 3  # pages 1, 2 (both empty after the filter) and 3
        assert "nextPage" not in lists[0]["query"] and all("nextPage" in r["query"] for r in lists[1:])
        assert all(r["query"]["pageSize"] == ["2"] for r in lists)
    finally:
        engine.close()


def test_a_listing_past_the_page_cap_is_a_clear_error(paged_sandbox: Sandbox) -> None:
    _other_instances(paged_sandbox, 7)  # 4 pages of 2
    settings = ClientSettings(paged_sandbox.base_url, DEFAULT_USER_SECRET, DEFAULT_ORG_SECRET)
    client = ElementsClient(settings, page_size=2, max_pages=3)
    try:
        with pytest.raises(Exception) as err:
            client.find_instances_by_tag("provision:nowhere")
        assert getattr(err.value, "kind", None) == "too_many_pages"
        assert "3 pages" in str(err.value) and "Elements-Next-Page-Token" in str(err.value)
        client.max_pages = 4  # exactly enough: every page read, the sparse matches all found
        found = client.find_instances_by_tag("other")
        assert [i["name"] for i in found] == ["other 1", "other 3", "other 5"]
    finally:
        client.close()
