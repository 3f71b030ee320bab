"""Logging is configured at the edges (issue 14 item 6).

Constructors (``Engine``, ``ElementsClient`` with its ``ProviderClient``, ``make_app``) leave global
logging exactly as they found it; ``install`` (used by the CLI, ``serve`` and ``open_engine``) is
idempotent and covers every logger of the engine's trees; only the CLI calls ``basicConfig``.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from testkit import TEST_KEY

from engine import ElementsClient, Engine
from engine.config import ClientSettings
from engine.security.redaction import LOGGER_TREES, install
from engine.web.callback_app import make_app
from engine.wiring import open_repository

ROOT = Path(__file__).resolve().parents[2]


def _logging_state() -> dict[str, Any]:
    """Level, handlers, filters and propagation of the root logger and every named logger."""
    loggers: list[tuple[str, logging.Logger]] = [("", logging.getLogger())]
    loggers += [(name, lg) for name, lg in sorted(logging.Logger.manager.loggerDict.items())
                if isinstance(lg, logging.Logger)]
    return {name: (lg.level, list(lg.handlers), list(lg.filters), lg.propagate) for name, lg in loggers}


def test_constructors_leave_global_logging_alone(sqlite_url: str) -> None:
    repo = open_repository(sqlite_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    before = _logging_state()
    client = ElementsClient(ClientSettings(base_url="http://127.0.0.1:9/elements/api-v2",
                                           user_secret="u-secret", org_secret="o-secret",
                                           provider_root="http://127.0.0.1:9/_provider"))
    engine = Engine(repo, client)
    make_app(engine)
    try:
        after = _logging_state()
        # New loggers may appear (a module imported on first use); existing ones must not change.
        assert {name: after[name] for name in before} == before
    finally:
        engine.close()


def test_install_is_idempotent_and_covers_every_logger_of_the_trees() -> None:
    handler = logging.StreamHandler(io.StringIO())
    child = logging.getLogger("engine.some.new.module")  # created before install, below "engine"
    try:
        first = install([handler])
        second = install([handler])
        assert first is second
        for name, lg in logging.Logger.manager.loggerDict.items():
            in_trees = any(name == t or name.startswith(t + ".") for t in LOGGER_TREES)
            if isinstance(lg, logging.Logger) and in_trees:
                assert lg.filters.count(first) == 1, name
        assert child.filters.count(first) == 1
        assert handler.filters.count(first) == 1
        for root_handler in logging.getLogger().handlers:
            assert root_handler.filters.count(first) == 1
    finally:
        child.removeFilter(first)
        del logging.Logger.manager.loggerDict["engine.some.new.module"]


def test_a_record_of_a_covered_logger_is_masked_for_any_handler() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("engine.core.runner")
    install()
    # Added after install and not given the filter: the logger's own filter still masks the record.
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("GET /oauth/token?apiKey=k&apiSecret=%s", "very-secret-value")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert "very-secret-value" not in stream.getvalue()
    assert "apiSecret=********" in stream.getvalue()


def test_only_the_cli_configures_logging() -> None:
    """``basicConfig`` and ``configure_logging`` appear in engine/cli only."""
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        text = path.read_text()
        inside_cli = path.parent.name == "cli"
        if ("basicConfig" in text or "configure_logging" in text) and not inside_cli:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
