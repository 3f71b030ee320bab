"""The DISCONNECTING step (issue 10/12 must-have 4): revoke the provider token, delete the instance.

Why a state and not a failure reason: a disconnected connection is not a failed one. FAILED means
"something went wrong, an operator or the user may fix it" (restart, reauthorize, the console's
needs-attention list); a disconnect is the application's own decision, and the calls it needs
(revoke, DELETE) must survive crashes like every other step. So DISCONNECTING is a state whose
step does the calls, and DISCONNECTED is a terminal state of its own; ``connection.disconnected``
is its event.

The step runs in two durable parts. First, where the engine holds the provider's refresh token
(it renews the tokens itself), the token is revoked at the provider, and ``revoked`` is committed
(a ``Stay``): a crash after that commit does not revoke again. Then DELETE ``/instances/{id}``
(a 404 means already gone) and ``remove`` to DISCONNECTED. A crash between a call and its commit
repeats only that call, and both calls are harmless to repeat.
"""
from __future__ import annotations

from typing import Any

from states.attempt import Attempt
from states.decisions import Advance, Decision, Stay
from states.model import Trigger
from states.ports import Ports


def engine_held_token(attempt: Attempt) -> str | None:
    """The provider refresh token the engine holds for ``attempt``, or None (the platform holds it)."""
    tokens: dict[str, Any] = attempt.secrets.get("user_tokens") or {}
    token = tokens.get("oauth.user.refresh_token")
    return token if isinstance(token, str) and token else None


def handle_disconnecting(attempt: Attempt, ports: Ports) -> Decision:
    """Revoke (once, durably), then delete the instance, then DISCONNECTED."""
    token = engine_held_token(attempt)
    config = attempt.config
    if token and not attempt.secrets.get("revoked"):
        key, secret = config.get("oauth.api.key", ""), config.get("oauth.api.secret", "")
        ports.call(lambda _try: ports.client.revoke_oauth2(key, secret, token))
        return Stay(secrets={"revoked": True}, next_run_at=ports.now())
    if attempt.instance_id:
        instance_id = attempt.instance_id
        ports.call(lambda _try: ports.client.delete_instance(instance_id))
    # The engine keeps no tokens of a connection that no longer exists.
    return Advance(Trigger.REMOVE, secrets={"user_tokens": {}} if token else {},
                   note="instance deleted" if attempt.instance_id else "no instance to delete")
