"""Fixtures for the diagram tests and the console's attempt page.

- ``make_attempt`` / ``make_history``: hand-made ``Attempt`` and ``HistoryEntry`` objects (unit level,
  no database), with a secret in ``secrets`` so tests can prove it never leaks into a diagram.
- ``engine``: a real ``Engine`` on a SQLite file in ``tmp_path`` whose platform URL goes nowhere;
  ``walk`` commits transitions straight through the repository, so histories need no HTTP.
- ``need_dot`` / ``need_chromium``: skip with a reason when the tool is missing, except in CI
  (``CI=true``), where a missing tool is a broken CI image and fails the test instead.
- ``decode_png``: a tiny stdlib PNG decoder (Pillow is not a dependency) for the browser test.
"""
from __future__ import annotations

import itertools
import os
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.core.facade import Engine
from engine.wiring import open_engine
from persistence.writes import transition_write
from states.attempt import Attempt, HistoryEntry
from states.model import Flow, State

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
SECRET = "s3cr3t-never-in-a-diagram"
QUICK_CONFIG = {"oauth.api.key": "k", "oauth.api.secret": SECRET, "oauth.user.token": "t",
                "oauth.user.token.secret": "ts", "quickbooks.realm.id": "1"}

# (trigger, source, dest, seconds after T0, extra HistoryEntry fields)
Step = tuple[str, str, str, float, dict[str, Any]]


def _require(tool: str, why: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"`{tool}` is missing in CI: {install} in .ci/run ({why})")
        pytest.skip(f"`{tool}` is not installed ({install}); {why} - CI runs this test")
    return path


@pytest.fixture
def need_dot() -> str:
    """Path of Graphviz's ``dot``; skips locally (fails in CI) when it is missing."""
    return _require("dot", "SVG/PNG rendering needs it", "apt-get install graphviz")


@pytest.fixture
def need_chromium() -> str:
    """Path of a headless-capable Chromium; skips locally (fails in CI) when it is missing."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return str(shutil.which(name))
    return _require("chromium", "the browser test screenshots the console", "apt-get install chromium")


@pytest.fixture
def make_attempt() -> Callable[..., Attempt]:
    """Build an ``Attempt`` (quickbooks/oauth1 by default) carrying a secret in ``secrets``."""

    def make(state: State = State.NEW, flow: Flow = Flow.OAUTH1, **kw: Any) -> Attempt:
        fields: dict[str, Any] = dict(
            id="0b7c1d2e-0000-4000-8000-00000000abcd", element_key="quickbooks", flow=flow, name="Acme Ltd",
            state=state, version=1, created_at=T0, updated_at=T0,
            secrets={"config": {"oauth.api.secret": SECRET}, "token": SECRET},
            last_error={"kind": "unavailable", "message": "m", "request_id": SECRET},
        )
        fields.update(kw)
        return Attempt(**fields)

    return make


@pytest.fixture
def make_history() -> Callable[..., list[HistoryEntry]]:
    """History rows numbered from 1: ``make_history(("issue_token", "NEW", "TOKEN_ISSUED", 1), ...)``."""

    def make(*steps: tuple[Any, ...]) -> list[HistoryEntry]:
        rows = []
        for seq, (trigger, src, dst, secs, *extra) in enumerate(steps, start=1):
            kw = dict(extra[0]) if extra else {}
            if dst == State.FAILED.value:
                kw.setdefault("outcome", "failed")
            rows.append(HistoryEntry("a", seq, trigger, src, dst, T0 + timedelta(seconds=secs), **kw))
        return rows

    return make


@pytest.fixture
def clock() -> FakeClock:
    """The engine's clock, starting at ``T0``."""
    return FakeClock(T0)


@pytest.fixture
def engine(tmp_path: Path, clock: FakeClock) -> Iterator[Engine]:
    """An ``Engine`` on ``tmp_path/p.db``; its platform URL is unreachable (nothing here calls it)."""
    eng = open_engine(f"sqlite:///{tmp_path}/p.db", environ={"ELEMENTS_BASE_URL": "http://127.0.0.1:9/x"},
                      clock=clock)
    yield eng
    eng.close()


@pytest.fixture
def start_quick(engine: Engine, clock: FakeClock) -> Callable[..., Attempt]:
    """Start a quick-flow quickbooks attempt (in NEW) named ``name``, one second after the last one."""

    realms = itertools.count(1)

    def start(name: str = "Acme") -> Attempt:
        clock.advance(1)
        # Each its own QuickBooks company: a live attempt holds its realm (engine.core.realm_start).
        config = {**QUICK_CONFIG, "quickbooks.realm.id": str(next(realms))}
        return engine.start("quickbooks", name, flow="quick", config=config)

    return start


@pytest.fixture
def walk(engine: Engine) -> Callable[[str, Sequence[Step]], Attempt]:
    """Commit ``steps`` for an attempt through ``repo.apply`` (no HTTP, no worker)."""

    def run(attempt_id: str, steps: Sequence[Step]) -> Attempt:
        for trigger, src, dst, secs, extra in steps:
            attempt = engine.get(attempt_id)
            assert attempt.state.value == src, (attempt.state, src)
            at = attempt.created_at + timedelta(seconds=secs)
            outcome = extra.get("outcome", "failed" if dst == "FAILED" else "ok")
            entry = HistoryEntry(attempt.id, attempt.history_seq + 1, trigger, src, dst, at, 5, "test",
                                 outcome, extra.get("tries", 1), extra.get("error"), extra.get("note"))
            reason = extra.get("note") if dst == "FAILED" else None
            assert engine.repo.apply(transition_write(attempt, entry, owner=None, now=at, next_run_at=None,
                                                      failure_reason=reason, last_error=extra.get("error")))
        return engine.get(attempt_id)

    return run


def _decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """``(width, height, channels, rows)`` of an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, up_left = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@pytest.fixture
def decode_png() -> Callable[[bytes], tuple[int, int, int, list[bytes]]]:
    """The stdlib PNG decoder (see ``_decode_png``)."""
    return _decode_png
