"""Lost-lease recovery is a complete renewal, on both backends, on a fake clock (issue 16 item 5).

Worker A renews (the provider rotates the token) but commits only after its lease ran out and
worker B took the attempt over and presented the old token (rejected: B schedules the
confirmation a minute later). A's transition is discarded; ``merge_secrets`` keeps the rotated
token. Before, without ``refresh_time``/``next_renewal_at``, so the attempt renewed again at once:
an OAuth1 Reconnect answered 212 and the attempt failed holding a valid fresh token.
``test_lost_lease_renewal.py`` does the same with real SIGSTOPped worker processes. The attempts are
engine-owned (``renewal="engine"``): a platform-owned consent attempt is only watched.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from testkit import QBO, consent

from engine import Engine
from engine.clock import FakeClock
from states import State

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.clock_at(T0), pytest.mark.sandbox_on_clock]


@pytest.mark.parametrize("flow", ["oauth1", "oauth2"])
def test_a_renewal_committed_after_a_lost_lease_keeps_its_schedule(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any, flow: str) -> None:
    first, second = make_engine(clock=clock), make_engine(clock=clock)
    a = first.start("quickbooks", f"Lost lease {flow}", flow=flow, renewal="engine", **QBO)
    first.run_until_idle()
    first.handle_callback(consent(first.redirect_url(first.get(a.id)) or ""))
    first.run_until_idle()
    a = first.get(a.id)
    assert a.state is State.PROVISIONED and a.next_run_at is not None and a.instance_id
    clock.now = a.next_run_at
    lease_s = first.settings.lease_s
    [claimed] = first.repo.claim_due(clock(), first.worker_id, clock() + timedelta(seconds=lease_s), 10)
    step = first.runner.prepare(claimed)  # the provider rotates the token; not committed yet
    clock.advance(lease_s + 1)
    report = second.tick()  # B takes over and presents the old token: rejected, confirm later
    assert report.count("retry") == 1
    [lost] = first.runner.commit([step])
    assert lost.outcome == "lost"
    renewed = first.get(a.id)
    assert renewed.refresh_time == int(clock().timestamp() * 1000) - (lease_s + 1) * 1000
    assert a.next_renewal_at is not None and renewed.next_renewal_at is not None
    assert renewed.next_renewal_at > clock() > a.next_renewal_at  # the schedule of the new token
    assert renewed.next_run_at == clock() and renewed.failures == 0 and renewed.last_error is None
    second.run_until_idle()  # the push
    pushed = first.get(a.id)
    config = sandbox.store.instances[int(a.instance_id)].configuration
    assert config["oauth.user.token"] == pushed.secrets["user_tokens"]["oauth.user.token"]
    assert config["oauth.user.refresh_time"] == str(pushed.refresh_time)
    assert pushed.next_run_at == pushed.next_renewal_at
    clock.advance(120)  # past B's scheduled confirmation (60 s): nothing renews again
    assert second.tick().claimed == 0
    assert first.get(a.id).state is State.PROVISIONED
