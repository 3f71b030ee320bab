"""A crash-safe re-authentication PUT (issue 16 item 7).

A re-authorised attempt keeps its instance and sends the new consent ``code`` (or verifier) with
``PUT /instances/{id}?reAuthenticate=true``. The code is single use: if the worker dies after the
platform received the PUT, a repeated PUT presents a spent code and is refused. So the step works
in two runs, recording what it knows as data in the attempt's (sealed) secrets blob:

1. No ``reauth_sent_at`` yet: record it (the time the PUT may go out) and run again at once. No
   call is made, so a crash here loses nothing.
2. ``reauth_sent_at`` set, so a PUT may have gone out: GET the instance first. If its tokens
   changed since the attempt's last known state, adopt the instance as it is; else PUT.

The signal that the tokens changed is ``oauth.user.refresh_time`` on the instance being newer than
the attempt's own ``refresh_time`` while the instance is ``valid``. The platform sets both when it
exchanges a code (the sandbox's ``grant`` does: fresh tokens, ``refresh_time`` = now, ``valid`` =
true); a renewal_rejected attempt's ``refresh_time`` is that of the tokens that stopped working, so
an unchanged instance fails the test and gets the PUT. A platform refresh made with still-working
tokens also passes it, and then the instance's current tokens are equally the ones to adopt.
"""
from __future__ import annotations

from typing import Any

from states.attempt import Attempt
from states.decisions import Stay
from states.payloads import config_int, instance_configuration
from states.ports import Ports

REAUTH_SENT_AT = "reauth_sent_at"


def before_put(attempt: Attempt, ports: Ports) -> Stay | None:
    """Record that a PUT may go out (run again at once); None once the marker is committed."""
    if REAUTH_SENT_AT in attempt.secrets:
        return None
    return Stay(secrets={REAUTH_SENT_AT: ports.now().isoformat()}, next_run_at=ports.now())


def already_reauthenticated(attempt: Attempt, instance: dict[str, Any]) -> bool:
    """True if the instance's tokens changed since the attempt's last known state."""
    refreshed = config_int(instance_configuration(instance).get("oauth.user.refresh_time")) or 0
    known = attempt.refresh_time or 0
    return instance.get("valid") is not False and refreshed > known


def reauthenticate(attempt: Attempt, ports: Ports, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(instance, adopted): the instance re-authenticated by an earlier PUT, or by this one."""
    instance_id = str(attempt.instance_id)

    def step(_try: int) -> tuple[dict[str, Any], bool]:
        # Each try looks first: an in-process retry after a timeout may follow a PUT that landed.
        current = ports.client.get_instance(instance_id)
        if already_reauthenticated(attempt, current):
            return current, True
        reauth = {**body, "providerData": body.get("providerData", {})}
        return ports.client.update_instance(instance_id, reauth, method="PUT", reauthenticate=True), False

    return ports.call(step)

def done() -> dict[str, Any]:
    """The secrets update that clears the marker once the instance is re-authenticated."""
    return {REAUTH_SENT_AT: None}
