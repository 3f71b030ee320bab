"""``Engine.start_many``: many attempts in one transaction, all or none (issue 6/6).

A back-office job enrolling a list of accounts wants one commit for the list and no partial
result: every item is validated before anything is stored, an error names the item and field,
and idempotency keys mean per item what they mean for ``start``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from testkit import QBO, consent, listening

from engine import Engine, InvalidInputError, MissingConfigurationError
from engine.core.starts import MAX_START_MANY
from states import State


def item(name: str, **kw: Any) -> dict[str, Any]:
    return {"element": "quickbooks", "name": name, "flow": "oauth1", **QBO, **kw}


@contextmanager
def commits(engine: Engine) -> Iterator[list[str]]:
    """INSERT INTO attempts statements and commits sent through the repository's engines."""
    seen: list[str] = []

    def on_execute(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().startswith("INSERT INTO attempts"):
            seen.append(f"insert x{len(params) if many else 1}")

    def on_commit(_conn: Any) -> None:
        seen.append("commit")

    with listening(engine.repo.engines, before_cursor_execute=on_execute, commit=on_commit):
        yield seen


def test_many_attempts_in_one_transaction(make_engine: Callable[..., Engine], sandbox: Any) -> None:
    engine = make_engine()
    with commits(engine) as seen:
        started = engine.start_many([item(f"acct-{i}", tags=["bulk"]) for i in range(20)])
    assert seen.count("commit") == 1 and all(s.startswith("insert") for s in seen if s != "commit")
    assert [a.name for a in started] == [f"acct-{i}" for i in range(20)]
    assert len({a.id for a in started}) == 20
    stored = {a.id: a for a in engine.list()}
    for a in started:
        got = stored[a.id]
        assert (got.state, got.version, got.tags, got.flow.value) == (State.NEW, 1, ("bulk",), "oauth1")
        assert got.secrets["config"]["oauth.api.key"] == QBO["api_key"]
        assert engine.history(a.id) == []
    # They are ordinary attempts: the worker drives them and callbacks apply.
    engine.run_until_idle()
    for a in engine.list(State.REDIRECTED):
        assert engine.handle_callback(consent(engine.redirect_url(a) or "")).status == "applied"
    engine.run_until_idle()
    assert engine.counts() == {"PROVISIONED": 20}


def test_an_empty_list_stores_nothing(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    assert engine.start_many([]) == []
    assert engine.counts() == {}


@pytest.mark.parametrize("items, field", [
    ([item("a"), item("b", callback_url="ftp://x"), item("c")], "items[1].callback_url"),
    ([item("a"), item("b", colour="red")], "items[1].colour"),
    ([item("a"), {"element": "quickbooks"}], "items[1].name"),
    ([item("a"), "quickbooks"], "items[1]"),
    ([item("a"), item("b", tags="one")], "items[1].tag"),
    ([item("a"), item("")], "items[1].name"),
    ([item("a", idempotency_key="k1"), item("b", idempotency_key="k1")], "items[1].idempotency_key"),
    ({"element": "quickbooks", "name": "a"}, "items"),
    ([item(f"n{i}") for i in range(MAX_START_MANY + 1)], "items"),
], ids=["bad-url", "unknown-keyword", "missing-name", "not-a-mapping", "tags-a-string", "empty-name",
        "key-twice-other-inputs", "a-mapping-not-a-list", "too-many"])
def test_bad_items_are_named_and_nothing_is_stored(make_engine: Callable[..., Engine], items: Any,
                                                    field: str) -> None:
    engine = make_engine()
    with pytest.raises(InvalidInputError) as exc:
        engine.start_many(items)
    assert exc.value.field == field and str(exc.value).startswith(field + ":")
    assert engine.counts() == {}


def test_missing_configuration_keeps_its_class_and_names_the_item(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    with pytest.raises(MissingConfigurationError) as exc:
        engine.start_many([item("a"), {"element": "quickbooks", "name": "b", "flow": "oauth1"}])
    assert exc.value.field == "items[1].configuration" and exc.value.missing
    assert "oauth.api.key" in str(exc.value) and exc.value.hint
    assert engine.counts() == {}


def test_idempotency_keys_mean_what_they_mean_for_start(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    earlier = engine.start("quickbooks", "acct-1", flow="oauth1", idempotency_key="job-7:1", **QBO)
    k1, k2 = item("acct-1", idempotency_key="job-7:1"), item("acct-2", idempotency_key="job-7:2")
    got = engine.start_many([k1, k2, dict(k2), item("acct-3")])
    assert got[0].id == earlier.id and got[1].id == got[2].id and len({a.id for a in got}) == 3
    assert sum(engine.counts().values()) == 3
    # Repeating the whole call creates nothing more (for the keyed items).
    again = engine.start_many([k1, k2])
    assert [a.id for a in again] == [got[0].id, got[1].id] and sum(engine.counts().values()) == 3


def test_a_stored_key_with_other_inputs_refuses_the_whole_list(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    engine.start("quickbooks", "acct-1", flow="oauth1", idempotency_key="job-7:1", **QBO)
    with pytest.raises(InvalidInputError) as exc:
        engine.start_many([item("new-0"), item("someone-else", idempotency_key="job-7:1")])
    assert exc.value.field == "items[1].idempotency_key"
    assert [a.name for a in engine.list()] == ["acct-1"]


def test_a_key_taken_meanwhile_is_looked_up_again(make_engine: Callable[..., Engine]) -> None:
    """Another caller stores one of our keys between our lookup and our insert (real database)."""
    engine = make_engine()
    other = make_engine()
    lookup = engine.repo.attempts_by_idempotency_keys
    raced: list[str] = []

    def stale_lookup(keys: Any) -> Any:
        found = lookup(keys)
        if not raced:  # the other caller wins the race right after our first lookup
            raced.append(other.start("quickbooks", "acct-2", flow="oauth1", idempotency_key="k2", **QBO).id)
        return found

    engine.repo.attempts_by_idempotency_keys = stale_lookup  # type: ignore[method-assign]
    got = engine.start_many([item("acct-1", idempotency_key="k1"), item("acct-2", idempotency_key="k2")])
    assert got[1].id == raced[0]
    names = sorted(a.name for a in engine.list())
    assert names == ["acct-1", "acct-2"]  # the first insert was rolled back whole: no duplicate


def test_the_largest_list_fits_one_call(make_engine: Callable[..., Engine]) -> None:
    """1,000 items x 29 columns stay within each database's limit on bound parameters."""
    engine = make_engine()
    started = engine.start_many([item(f"acct-{i}") for i in range(MAX_START_MANY)])
    assert len({a.id for a in started}) == MAX_START_MANY
    keyed = engine.start_many([item(f"keyed-{i}", idempotency_key=f"k{i}") for i in range(MAX_START_MANY)])
    again = engine.start_many([item(f"keyed-{i}", idempotency_key=f"k{i}") for i in range(MAX_START_MANY)])
    assert [a.id for a in again] == [a.id for a in keyed]  # 1,000 keys looked up in one query
    assert engine.counts() == {"NEW": 2 * MAX_START_MANY}
