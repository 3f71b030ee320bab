"""The CLI's option parsers over arbitrary text: a value in range or ``UsageError`` (issue 16).

``--older-than 99999999999d`` used to overflow ``timedelta`` and ``--port 70000`` was passed on to
the socket layer, which listened on 70000 mod 65536.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli.options import UsageError, host_name, parse_duration, port_number, whole_number

TEXT = st.one_of(st.text(max_size=20), st.integers().map(str), st.floats().map(str),
                 st.integers(min_value=0, max_value=10**20).map(lambda n: f"{n}{'smhdw'[n % 5]}"))


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_durations_are_bounded_or_a_usage_error(text: str) -> None:
    try:
        value = parse_duration("--older-than", text)
    except UsageError as exc:
        assert exc.field == "--older-than"
    else:
        assert timedelta(0) <= value <= timedelta(days=36_500)


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_ports_are_0_to_65535_or_a_usage_error(text: str) -> None:
    try:
        value = port_number(text)
    except UsageError as exc:
        assert exc.field == "--port" and "from 0 to 65535 (0 = any free port)" in str(exc)
    else:
        assert 0 <= value <= 65535


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(max_size=30), st.ip_addresses().map(str)))
def test_hosts_are_addresses_or_names_or_a_usage_error(text: str) -> None:
    try:
        assert host_name(text) == text
    except UsageError as exc:
        assert exc.field == "--host"
    else:
        assert text.isascii() and text.isprintable() and " " not in text


@pytest.mark.parametrize("text, expected", [("36500d", timedelta(days=36_500)), ("0s", timedelta(0)),
                                            (" 2h ", timedelta(hours=2)), ("5W", timedelta(weeks=5))])
def test_durations_in_range_are_accepted(text: str, expected: timedelta) -> None:
    assert parse_duration("--newer-than", text) == expected


RULE = "^--newer-than: expected a duration like 30m, 2h or 7d of at most 36500d"


@pytest.mark.parametrize("text", ["36501d", "99999999999d", "1e3s", "\u0661d", "-1d", "7 days", ""])
def test_durations_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match=RULE):
        parse_duration("--newer-than", text)


def test_whole_numbers_name_the_flag_the_range_and_the_value() -> None:
    limit = whole_number("--limit", 1, 100_000)
    assert (limit("1"), limit("100000"), limit(" 7 ")) == (1, 100_000, 7)
    for bad in ("0", "100001", str(10**30), "1.0", "ten", "\u0665"):
        with pytest.raises(UsageError, match=f"^--limit: must be a whole number from 1 to 100000, "
                                             f"got '{bad}'"):
            limit(bad)
    assert port_number("0") == 0 and host_name("::1") == "::1"
    assert host_name("db-1.example.com") == "db-1.example.com"
