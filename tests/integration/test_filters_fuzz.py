"""``Engine.list``/``get``/``start``/``start_many`` and the operator actions over arbitrary arguments
(issue 16, finding 10): huge ints, floats, nan, text with control or bidi characters, wrong types.

They only ever raise ``ProvisionError`` (``InvalidInputError`` naming the argument for a wrong type or
range) and persist nothing: every row of every table is compared before and after (``stored_rows``),
on a real SQLite file and on PostgreSQL. Before, ``list(limit=10**30)`` escaped as ``OverflowError``,
``list(older_than=timedelta.max)`` as ``OverflowError``, ``list(limit="5")`` as a database error,
and a name with U+202E was stored.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit import quick_config, stored_rows

from engine import Engine
from engine.errors import AttemptNotFoundError, InvalidInputError, ProvisionError
from persistence.schema import attempts
from states.model import State

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
#: The characters that must never reach a name, tag, id or configuration value.
BAD_CHARS = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\x00", "\x1b", "\x7f",
             "\x85", "\u2028"]
BAD_TEXT = st.tuples(st.text(max_size=5), st.sampled_from(BAD_CHARS), st.text(max_size=5)).map("".join)
WEIRD: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(), st.just(10**30), st.just(-(10**5000)), st.just(10**5000),
    st.floats(), st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e300]),
    st.text(max_size=12), BAD_TEXT, st.binary(max_size=6), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.timedeltas(),
    st.sampled_from([timedelta.max, timedelta.min, -timedelta(seconds=1), timedelta(days=36_501)]),
    st.sampled_from(list(State)), st.just(object()),
)


@pytest.fixture
def seeded(make_engine: Callable[..., Engine]) -> Iterator[tuple[Engine, str]]:
    """One engine (shared by all examples of a test) with one NEW attempt and one FAILED one."""
    engine = make_engine()
    new = engine.start("quickbooks", "waiting", flow="quick", config=quick_config())
    failed = engine.cancel(engine.start("quickbooks", "gone", flow="quick", config=quick_config()).id)
    assert failed.state is State.FAILED
    yield engine, new.id


def test_examples_from_the_issue_name_the_argument(seeded: tuple[Engine, str]) -> None:
    engine, attempt_id = seeded
    before = stored_rows(engine)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limit": 10**30}, "limit"), ({"limit": "5"}, "limit"), ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"), ({"older_than": timedelta.max}, "older_than"),
        ({"newer_than": timedelta(days=-1)}, "newer_than"), ({"older_than": 3600}, "older_than"),
        ({"element": 5}, "element"), ({"element": "quickbooks\u202e"}, "element"),
        ({"state": ["NEW"]}, "state"), ({"state": 1}, "state"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidInputError) as err:
            engine.list(**kwargs)
        assert err.value.field == field, kwargs
    for bad in (123, None, b"id", [attempt_id]):
        for action in (engine.get, engine.cancel, engine.restart, engine.reauthorize, engine.history):
            with pytest.raises(InvalidInputError, match="attempt_id: must be a string"):
                action(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="^name:"):
        engine.start("quickbooks", "Acme \u202eLtd", flow="quick", config=quick_config())
    bad_items: list[list[Any]] = [[{10**5000: 1}],
                                  [{"element": "quickbooks", "name": "n", "callback_wait_s": 10**5000}]]
    for items in bad_items:
        with pytest.raises(InvalidInputError, match=r"^items\[0\]\."):
            engine.start_many(items)
    assert stored_rows(engine) == before
    # The bounds themselves are accepted.
    assert len(engine.list(limit=100_000, older_than=timedelta(0), newer_than=timedelta(days=36_500))) == 2
    assert [a.id for a in engine.list("new", element="quickbooks", limit=1)] == [attempt_id]


@FUZZ
@given(state=st.one_of(st.sampled_from(["NEW", "failed", "nope", ""]), WEIRD),
       element=st.one_of(st.sampled_from(["quickbooks", "QuickBooks", "x" * 65]), WEIRD),
       older=st.one_of(st.timedeltas(), WEIRD), newer=st.one_of(st.timedeltas(), WEIRD),
       limit=st.one_of(st.integers(), WEIRD))
def test_list_filters_raise_only_provision_errors(seeded: tuple[Engine, str], state: Any, element: Any,
                                                  older: Any, newer: Any, limit: Any) -> None:
    engine, _ = seeded
    before = stored_rows(engine)
    try:
        found = engine.list(state, element=element, older_than=older, newer_than=newer, limit=limit)
    except ProvisionError:
        pass
    else:
        assert limit is None or type(limit) is int and 1 <= limit <= 100_000 and len(found) <= limit
        assert len(found) <= 2
    assert stored_rows(engine) == before


@FUZZ
@given(attempt_id=st.one_of(WEIRD, st.text(max_size=40)),
       action=st.sampled_from(["get", "cancel", "restart", "reauthorize", "history"]))
def test_get_and_operator_actions_raise_only_provision_errors(seeded: tuple[Engine, str], attempt_id: Any,
                                                              action: str) -> None:
    engine, _ = seeded
    before = stored_rows(engine)
    with pytest.raises(ProvisionError) as err:
        getattr(engine, action)(attempt_id)
    assert isinstance(err.value, AttemptNotFoundError if isinstance(attempt_id, str) else InvalidInputError)
    assert stored_rows(engine) == before


START_FIELDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "name": lambda bad: {"name": bad},
    "tag": lambda bad: {"tags": ["ok", bad]},
    "idempotency_key": lambda bad: {"idempotency_key": bad},
    "config": lambda bad: {"config": {**quick_config(), "extra.note": bad}},
    "api_key": lambda bad: {"api_key": bad},
}


@FUZZ
@given(field=st.sampled_from(sorted(START_FIELDS)), bad=BAD_TEXT,
       others=st.fixed_dictionaries({}, optional={"callback_wait_s": WEIRD, "flow": WEIRD, "tags": WEIRD}))
def test_start_refuses_control_and_bidi_characters_naming_the_field(
        seeded: tuple[Engine, str], field: str, bad: str, others: dict[str, Any]) -> None:
    engine, _ = seeded
    before = stored_rows(engine)
    kw: dict[str, Any] = {"flow": "quick", "config": quick_config(), "name": "Acme",
                          **START_FIELDS[field](bad)}
    with pytest.raises(InvalidInputError) as err:
        engine.start("quickbooks", **kw)
    assert err.value.field == field
    kw = {**kw, **others, **START_FIELDS[field](bad)}
    with pytest.raises(ProvisionError):  # with other bad arguments too: still refused, one of them named
        engine.start("quickbooks", **kw)
    assert stored_rows(engine) == before


@FUZZ
@given(n=st.integers(min_value=1, max_value=6), data=st.data())
def test_start_many_with_one_bad_item_stores_nothing(seeded: tuple[Engine, str], n: int, data: Any) -> None:
    engine, _ = seeded
    before = stored_rows(engine)
    items: list[Any] = [{"element": "quickbooks", "name": f"n{i}", "flow": "quick", "config": quick_config()}
                        for i in range(n)]
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    key = data.draw(st.sampled_from(["name", "callback_wait_s", "tags", "idempotency_key", "flow"]))
    items[index] = {**items[index], key: data.draw(st.one_of(BAD_TEXT, WEIRD))}
    with engine.repo.engine.connect() as conn:
        known = set(conn.execute(sa.select(attempts.c.id)).scalars())
    try:
        started = engine.start_many(items)
    except ProvisionError:
        assert stored_rows(engine) == before
    else:  # the draw happened to be valid for that key (e.g. None, or an acceptable tag list)
        # A valid idempotency key may have been used by an earlier example on this database: that
        # item returns the existing attempt instead of creating one.
        assert len(started) == n
        added = len({a.id for a in started} - known)
        assert len(stored_rows(engine)["attempts"]) == len(before["attempts"]) + added
