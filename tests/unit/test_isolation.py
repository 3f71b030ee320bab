"""The fast suite's guard: unit tests cannot open network connections; and the code's own rules
that a test can see (one reader of the process environment, one fake clock)."""
from __future__ import annotations

import ast
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


ROOT = Path(__file__).resolve().parents[2]
#: The one module that may read the process environment; every other one is handed values.
ENVIRONMENT_READER = "engine/config/environment.py"
#: Names whose use reads the process environment (requests' proxy look-up reads it too).
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "get_environ_proxies"}


def reads_environment(source: str) -> bool:
    """Whether code (not a docstring or comment) uses ``os.environ``, ``getenv`` or the like."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES:
            if node.attr != "environ" or (isinstance(node.value, ast.Name) and node.value.id == "os"):
                return True
        if isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                alias.name in ENV_NAMES for alias in node.names):
            return True
    return False


def test_the_environment_check_sees_a_reader() -> None:
    assert reads_environment("import os\nx = os.environ.get('A')")
    assert reads_environment("from os import getenv")
    assert not reads_environment('"""Reads os.environ."""\ndef f(environ: dict) -> None: ...')


def test_only_the_environment_module_reads_the_process_environment() -> None:
    """``engine/config/environment.py`` is the only reader of ``os.environ`` (config is passed in):
    the settings modules beside it take an ``environ`` mapping and ask it for the process's."""
    readers = sorted(str(p.relative_to(ROOT)) for top in ("states", "persistence", "engine", "sandbox")
                     for p in (ROOT / top).rglob("*.py")
                     if "__pycache__" not in p.parts and reads_environment(p.read_text(encoding="utf-8")))
    assert readers == [ENVIRONMENT_READER]
