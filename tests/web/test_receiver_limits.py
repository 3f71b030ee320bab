"""The receiver under a flood of forged callbacks (issue 16 item 9): they are counted, not stored,
and an address that keeps sending them gets 429 with Retry-After, while a real callback from
another address is applied. A real engine against the sandbox, through werkzeug's test client."""
from __future__ import annotations

from urllib.parse import urlsplit

from testkit import QBO, consent
from werkzeug.test import Client

from engine import Engine
from engine.web.callback_app import make_app
from engine.web.ratelimit import RateLimiter
from states import State


def test_forged_callbacks_are_counted_limited_and_never_stored(web_engine: Engine) -> None:
    now = [0.0]
    limiter = RateLimiter(burst=5, per_second=1.0, max_addresses=100, clock=lambda: now[0])
    client = Client(make_app(web_engine, limiter=limiter))
    a = web_engine.start("quickbooks", "Flooded", flow="oauth2", **QBO)
    web_engine.run_until_idle()
    query = urlsplit(consent(web_engine.redirect_url(web_engine.get(a.id)) or "")).query
    forged = [f"state={a.id}.forged&code=x", "state=00000000-0000-0000-0000-000000000000.x&code=x",
              "state=garbage", "code=x", "state=%ff%00"]
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    statuses = [client.get(f"/callback?{forged[i % len(forged)]}", environ_base=attacker).status_code
                for i in range(50)]
    assert statuses[:5] == [400] * 5 and set(statuses[5:]) == {429}
    limited = client.get("/callback?state=x", environ_base=attacker)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert "state" not in limited.get_data(as_text=True).lower()
    assert web_engine.repo.callbacks() == []  # nothing stored for any of them
    assert sum(web_engine.callbacks.unmatched_counts().values()) == 5  # the rest never reached the engine
    # The real user, from another address, is not limited; a refill lets the attacker try again.
    real = client.get(f"/callback?{query}", environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert real.status_code == 303
    assert web_engine.get(a.id).state is State.CALLBACK_RECEIVED
    assert [c.status for c in web_engine.repo.callbacks()] == ["applied"]
    now[0] += 1.0
    assert client.get("/callback?state=x", environ_base=attacker).status_code == 400
