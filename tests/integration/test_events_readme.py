"""The README's webhook receiver runs as written and receives a real, signed delivery (issue 10/12)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from test_crash import wait_for
from testkit import QBO, QUICK_CONFIG, consent
from webhook_receiver import free_port, new_secret

from engine import Engine, FakeClock
from engine.clients.webhooks import WebhookSender
from engine.config import WebhookSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def receiver_example() -> str:
    """The Python block of README's "Events" section that runs a receiver."""
    events = README.read_text().split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", events, re.S)
    (code,) = [str(b) for b in blocks if "Webhook(" in b]
    return code


def test_readme_receiver_verifies_and_prints_deliveries(engine_on: Callable[..., Engine], sqlite_url: str,
                                                       tmp_path: Path) -> None:
    secret, port = new_secret(), free_port()
    script = tmp_path / "receiver.py"
    script.write_text(receiver_example())
    env = {**os.environ, "PROVISION_WEBHOOK_SECRET": secret, "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    clock = FakeClock()
    engine = engine_on(sqlite_url, clock=clock)
    sender = WebhookSender(WebhookSettings(url=f"http://127.0.0.1:{port}/", secret=secret, connect_timeout=1,
                                           read_timeout=2))
    hooked = Engine(engine.repo, engine.client, clock=clock, webhooks=sender)
    try:
        quick = hooked.start("quickbooks", "readme quick", flow="quick", config=QUICK_CONFIG)
        denied = hooked.start("quickbooks", "readme denied", flow="oauth2", **QBO)
        hooked.run_until_idle()
        hooked.handle_callback(consent(hooked.redirect_url(hooked.get(denied.id)) or "", decision="deny"))

        def all_delivered() -> bool:
            clock.advance(3600)  # past any backoff while the receiver starts up
            hooked.tick()
            return hooked.dispatch.outbox.counts() == {"delivered": 3}

        wait_for(all_delivered, 30, "the README receiver to accept every event")
        hooked.redeliver(hooked.events()[0].seq)  # a duplicate: the receiver must ignore it
        wait_for(all_delivered, 30, "the duplicate to be delivered")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        hooked.dispatch.close()
    assert sorted(out.splitlines()) == sorted([
        f"attempt.provisioned {quick.id} PROVISIONED None",
        f"attempt.redirected {denied.id} REDIRECTED None",
        f"attempt.failed {denied.id} FAILED user_denied",
    ]), err
    assert err.count('"POST / HTTP/1.1" 204') == 4  # the duplicate was acknowledged, not printed
