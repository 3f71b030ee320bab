"""Test helper, not a test: how the fault catalogue (``test_fault_catalogue.py``) counts outcomes.

After a fault, per attempt, from the DATABASE and the sandbox's instance list:

- **lost**: the attempt row is gone, its history has a gap or an invalid step, it did not end
  PROVISIONED, its instance is gone, or (engine-owned renewal) the instance or the provider no
  longer holds the token the database stores;
- **duplicated**: more than one platform instance carries the attempt's tag;
- **stuck**: the attempt is not in a terminal state, or still holds a lease, after the run.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testkit import quick_config

from engine import Engine
from engine.clock import FakeClock
from states import TERMINAL, State, invalid_step


@dataclass(frozen=True)
class Tally:
    """One row's outcome: attempts exposed to the fault, and how many were lost, duplicated, stuck."""

    trials: int
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.trials + other.trials, self.lost + other.lost,
                     self.duplicated + other.duplicated, self.stuck + other.stuck)


@dataclass
class Kit:
    """What a row may use: the fixtures of this test, fetched when a row asks for them."""

    request: pytest.FixtureRequest
    backend: str
    engine_on: Callable[..., Engine]
    sandbox: Any  # real time (for worker processes)
    clock: FakeClock
    waits: list[float]
    tmp_path: Path

    @property
    def db_url(self) -> str:
        if self.backend == "postgres":
            return str(self.request.getfixturevalue("pg_schema_url"))
        return f"sqlite:///{self.tmp_path}/provision.db"

    @property
    def clocked(self) -> Any:
        """The sandbox on ``clock``'s time."""
        return self.request.getfixturevalue("clocked_sandbox")


def audit(engine: Engine, sim: Any, ids: list[str]) -> Tally:
    """Count lost, duplicated and stuck attempts among ``ids`` (see the module docstring)."""
    lost = duplicated = stuck = 0
    instances = list(sim.store.instances.values())
    for attempt_id in ids:
        a = engine.repo.get(attempt_id)
        if a is None:
            lost += 1
            continue
        rows = engine.history(attempt_id)
        gap = [h.seq for h in rows] != list(range(1, len(rows) + 1)) or invalid_step(
            (h.trigger, h.source, h.dest) for h in rows) is not None
        tagged = [i for i in instances if a.instance_tag in i.tags]
        duplicated += len(tagged) > 1
        stuck += a.state not in TERMINAL or a.lease_owner is not None
        lost += gap or not usable(a, sim)
    return Tally(len(ids), lost, duplicated, stuck)


def usable(a: Any, sim: Any) -> bool:
    """PROVISIONED, its instance exists, and an engine-owned token is the one instance and provider hold."""
    instance = sim.store.instances.get(int(a.instance_id or 0))
    if a.state is not State.PROVISIONED or instance is None:
        return False
    if a.renewal_owner != "engine":
        return True  # the platform holds and renews the tokens itself
    tokens, config, store = a.secrets.get("user_tokens") or {}, instance.configuration, sim.store
    if "oauth.user.refresh_token" in tokens:
        refresh = tokens["oauth.user.refresh_token"]
        record = store.refresh_tokens.get(refresh)
        return bool(record and record.valid and config.get("oauth.user.refresh_token") == refresh)
    token = tokens.get("oauth.user.token")
    record = store.access_tokens.get(token)
    return bool(record and record.valid and config.get("oauth.user.token") == token)


def quick(engine: Engine, count: int, name: str) -> list[str]:
    # Each its own company: a quick start naming a realm a live attempt connects is refused.
    return [engine.start("quickbooks", f"{name} {i}", flow="quick", config=quick_config()).id
            for i in range(count)]


def stop_worker(worker: Any) -> None:
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(15)
    assert code == 0, (worker.stderr.read() if worker.stderr else b"").decode()[-2000:]


