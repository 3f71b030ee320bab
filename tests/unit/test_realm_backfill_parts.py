"""The pure parts of the realm backfill (issue 17): where an old attempt's realm is read from, and
the operator's report. The SQL and the end-to-end run: tests/integration/test_realm_backfill.py."""
from __future__ import annotations

from typing import Any

import pytest

from engine.core.realm_backfill import BackfillReport, RealmConflict, stored_realm


@pytest.mark.parametrize(("secrets", "callback", "realm"), [
    ({"config": {}}, {"realmId": "123146096291789", "code": "c"}, "123146096291789"),  # consent, since 0003
    ({"callback": {"realmId": "4620816365"}}, None, "4620816365"),  # consent, sealed before 0003
    ({"config": {"quickbooks.realm.id": "9130"}}, None, "9130"),  # quick start
    ({"config": {"quickbooks.realm.id": "9130"}}, {"realmId": "777"}, "777"),  # the callback wins
    ({"config": {"quickbooks.realm.id": ""}}, {"code": "c"}, None),  # Salesforce, HubSpot: no realm
    ({"config": {"quickbooks.realm.id": "not a realm!"}}, None, None),  # not a realm id: left alone
    ({}, None, None),
])
def test_the_realm_comes_from_the_callback_then_the_configuration(
        secrets: dict[str, Any], callback: dict[str, Any] | None, realm: str | None) -> None:
    assert stored_realm(secrets, callback) == realm


def test_the_report_names_each_conflict_and_what_is_left() -> None:
    assert BackfillReport().lines() == ["realm backfill: nothing to do"]
    report = BackfillReport(pending=True, visited=3, claimed=1, unreadable=1,
                            conflicts=[RealmConflict("quickbooks", "123", "old-id", "twin-id")])
    first, conflict = report.lines()
    assert "3 attempt(s) visited" in first and "1 conflict(s)" in first and "1 unreadable" in first
    assert "old-id" in conflict and "twin-id" in conflict and "provision disconnect" in conflict
    assert report.to_dict()["conflicts"] == [{"element_key": "quickbooks", "realm_id": "123",
                                             "holder": "old-id", "attempt_id": "twin-id"}]
    report.done = True
    assert report.lines()[0].endswith("; done")
