"""Fixtures of the security tests.

- ``planted_sandbox``: the simulator with the planted platform secrets of ``test_security_leaks``
  (unique per run, so a hit in any output can only come from a leak), on the real time.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_security_leaks import planted

from sandbox import Sandbox


@pytest.fixture
def planted_sandbox() -> Iterator[Sandbox]:
    """``test_security_leaks.planted`` on the real time (the CLI subprocesses run on it)."""
    with planted() as sb:
        yield sb
