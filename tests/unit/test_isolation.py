"""The fast suite's guard: unit tests cannot open network connections."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import requests
from unit.fakes import NetworkUsedError


def test_a_raw_socket_connect_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkUsedError):
        sock.connect(("127.0.0.1", 9))


def test_an_http_request_is_refused() -> None:
    # requests wraps the guard's error in its own; what matters is that nothing was sent.
    with pytest.raises((NetworkUsedError, requests.exceptions.ConnectionError)):
        requests.get("http://127.0.0.1:9/", timeout=1)


def test_a_database_server_is_out_of_reach() -> None:
    with pytest.raises(NetworkUsedError):
        socket.create_connection(("127.0.0.1", 5432), timeout=1)


def test_no_test_uses_a_second_fake_clock() -> None:
    """One fake-clock mechanism (``engine.clock.FakeClock``; see tests/conftest.py): no freezegun."""
    tests = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(import freezegun|from freezegun\b)", re.M)
    users = sorted(str(p.relative_to(tests)) for p in tests.rglob("*.py")
                   if pattern.search(p.read_text(encoding="utf-8")))
    assert users == []
