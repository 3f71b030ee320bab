"""The provisioning machine as data: states, triggers and every allowed transition.

This module is the single source of truth. The `transitions` Machine (``states.machine``), the
engine's transition checks and the diagrams are all derived from ``TRANSITIONS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class State(str, Enum):
    """A provisioning attempt's state; the value is what the database stores."""

    NEW = "NEW"
    TOKEN_ISSUED = "TOKEN_ISSUED"
    REDIRECTED = "REDIRECTED"
    CALLBACK_RECEIVED = "CALLBACK_RECEIVED"
    PROVISIONED = "PROVISIONED"
    FAILED = "FAILED"
    DISCONNECTING = "DISCONNECTING"  # revoking the provider token, deleting the instance
    DISCONNECTED = "DISCONNECTED"  # terminal, and not a failure (states.disconnect)

    def __str__(self) -> str:
        return self.value


class Trigger(str, Enum):
    """The name of a transition (DESIGN §2)."""

    ISSUE_TOKEN = "issue_token"
    REDIRECT = "redirect"
    RECEIVE_CALLBACK = "receive_callback"
    PROVISION = "provision"
    QUICK_PROVISION = "quick_provision"
    RENEW = "renew"
    REMOVE_DUPLICATE = "remove_duplicate"  # a late duplicate instance was deleted (issue 16 item 8)
    FAIL = "fail"
    RESTART = "restart"
    CHECK = "check"  # a health check found the instance unhealthy (states.health)
    DISCONNECT = "disconnect"  # an operator or the application asked to disconnect
    REMOVE = "remove"  # token revoked and instance deleted: the disconnect is done
    REAUTHORIZE = "reauthorize"  # new consent for the same instance (FAILED -> NEW, like restart)
    CONNECT_LINK = "connect_link"  # an operator issued a connect link for the customer (engine.core.connect)

    def __str__(self) -> str:
        return self.value


class Flow(str, Enum):
    """How an attempt obtains its credentials (DESIGN §1)."""

    OAUTH1 = "oauth1"
    OAUTH2 = "oauth2"
    QUICK = "quick"

    def __str__(self) -> str:
        return self.value


class FailureReason(str, Enum):
    """Why an attempt ended in FAILED; stored in ``attempts.failure_reason``."""

    USER_DENIED = "user_denied"
    CALLBACK_TIMEOUT = "callback_timeout"
    RETRIES_EXHAUSTED = "retries_exhausted"
    PERMANENT_ERROR = "permanent_error"
    INVALID_DATABASE = "invalid_database"
    RENEWAL_REJECTED = "renewal_rejected"
    CANCELLED = "cancelled"
    # The callback's realmId (QuickBooks company) is already connected by another live attempt
    # (states.realm): refused before any instance is created.
    DUPLICATE_CONNECTION = "duplicate_connection"

    def __str__(self) -> str:
        return self.value


class RenewalOwner(str, Enum):
    """Who renews a PROVISIONED attempt's tokens (DESIGN §7, "One owner per token")."""

    ENGINE = "engine"  # the engine refreshes ahead of the platform and pushes the tokens
    PLATFORM = "platform"  # the platform refreshes; the engine only watches the instance

    def __str__(self) -> str:
        return self.value


# The consent flows' tokens only ever live on the platform; quick callers brought their own tokens.
DEFAULT_RENEWAL_OWNER: dict[Flow, RenewalOwner] = {
    Flow.OAUTH1: RenewalOwner.PLATFORM,
    Flow.OAUTH2: RenewalOwner.PLATFORM,
    Flow.QUICK: RenewalOwner.ENGINE,
}


@dataclass(frozen=True)
class Transition:
    """One edge of the machine: ``trigger`` moves an attempt from ``source`` to ``dest``."""

    trigger: Trigger
    source: State
    dest: State


# States a worker never has to act on again without outside help (an operator or the user).
TERMINAL: frozenset[State] = frozenset({State.PROVISIONED, State.FAILED, State.DISCONNECTED})

# Every non-terminal state can fail; PROVISIONED fails only when a renewal is rejected.
# DISCONNECTING fails only when the platform refuses the delete for good (bad secrets, 403).
_FAILABLE = (State.NEW, State.TOKEN_ISSUED, State.REDIRECTED, State.CALLBACK_RECEIVED, State.PROVISIONED,
             State.DISCONNECTING)

# What an operator's cancel may stop (DESIGN §2: "any non-terminal --fail--> FAILED"). A
# PROVISIONED attempt is not among them: failing it would orphan its instance at the platform and
# read as a rejected renewal; ``disconnect`` is the way to end a connection.
CANCELLABLE: frozenset[State] = frozenset(s for s in _FAILABLE if s not in TERMINAL)

TRANSITIONS: tuple[Transition, ...] = (
    Transition(Trigger.ISSUE_TOKEN, State.NEW, State.TOKEN_ISSUED),
    Transition(Trigger.REDIRECT, State.TOKEN_ISSUED, State.REDIRECTED),
    Transition(Trigger.REDIRECT, State.NEW, State.REDIRECTED),  # oauth2: no request token
    Transition(Trigger.RECEIVE_CALLBACK, State.REDIRECTED, State.CALLBACK_RECEIVED),
    Transition(Trigger.PROVISION, State.CALLBACK_RECEIVED, State.PROVISIONED),
    Transition(Trigger.QUICK_PROVISION, State.NEW, State.PROVISIONED),
    Transition(Trigger.RENEW, State.PROVISIONED, State.PROVISIONED),
    # Recorded when a health check finds the instance newly unhealthy: the history row is what
    # emits connection.unhealthy (engine.core.events); the attempt stays PROVISIONED.
    Transition(Trigger.CHECK, State.PROVISIONED, State.PROVISIONED),
    Transition(Trigger.REMOVE_DUPLICATE, State.PROVISIONED, State.PROVISIONED),
    *(Transition(Trigger.FAIL, s, State.FAILED) for s in _FAILABLE),
    Transition(Trigger.RESTART, State.FAILED, State.NEW),
    # Disconnect (issue 10/12 must-have 4): a connected attempt, or a failed one that may still
    # have an instance (renewal_rejected), is taken down in durable steps.
    Transition(Trigger.DISCONNECT, State.PROVISIONED, State.DISCONNECTING),
    Transition(Trigger.DISCONNECT, State.FAILED, State.DISCONNECTING),
    Transition(Trigger.REMOVE, State.DISCONNECTING, State.DISCONNECTED),
    Transition(Trigger.REAUTHORIZE, State.FAILED, State.NEW),
    # Recorded when an operator issues a connect link (the console's "copy connect link"): the
    # history says who sent the customer a link and when; the attempt keeps waiting for consent.
    Transition(Trigger.CONNECT_LINK, State.REDIRECTED, State.REDIRECTED),
)

# The path each flow takes when nothing goes wrong; used by docs, the demo and path checks.
HAPPY_PATHS: dict[Flow, tuple[Trigger, ...]] = {
    Flow.OAUTH1: (Trigger.ISSUE_TOKEN, Trigger.REDIRECT, Trigger.RECEIVE_CALLBACK, Trigger.PROVISION),
    Flow.OAUTH2: (Trigger.REDIRECT, Trigger.RECEIVE_CALLBACK, Trigger.PROVISION),
    Flow.QUICK: (Trigger.QUICK_PROVISION,),
}
