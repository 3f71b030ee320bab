"""Fixtures of the security tests.

- ``planted_sandbox``: the simulator with the planted platform secrets of ``test_security_leaks``
  (unique per run, so a hit in any output can only come from a leak).
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_security_leaks import ORG_SECRET, USER_SECRET

from sandbox import Sandbox
from sandbox import start as start_sandbox


@pytest.fixture
def planted_sandbox() -> Iterator[Sandbox]:
    """A sandbox that accepts only ``USER_SECRET`` / ``ORG_SECRET``."""
    sb = start_sandbox(port=0, user_secret=USER_SECRET, org_secret=ORG_SECRET)
    try:
        yield sb
    finally:
        sb.stop()
