"""The operator actions the console offers: each one says when it applies and what it will do.

An ``Action`` is data: the console shows its button only where ``applies`` is true, asks for
confirmation with ``explain``'s sentence, then calls ``run`` with the operator's name (recorded in
the history as ``operator:<name>``). ``bulk_states`` lists the states a filtered selection must be
in for the action to be offered in bulk (empty: single attempts only).

Extension point: features that add engine methods (``check``, ``disconnect``, ``redeliver``, the
connect link) add an ``Action`` to ``DEFAULT_ACTIONS`` or pass their own tuple to ``ConsoleApp``;
an action the engine cannot do yet is simply not listed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from states.attempt import Attempt
from states.machine import next_state
from states.model import CANCELLABLE, Flow, State, Trigger

if TYPE_CHECKING:
    from engine.core.facade import Engine

@dataclass(frozen=True)
class Action:
    """One operator action (see the module docstring)."""

    name: str
    label: str
    applies: Callable[[Attempt], bool]
    explain: Callable[[Attempt], str]
    # (engine, attempt id, operator name) -> the attempt, or a text the console shows the operator
    # once instead of going back to the attempt (the connect link).
    run: Callable[[Engine, str, str], Attempt | str]
    bulk_states: tuple[State, ...] = ()
    danger: bool = False

    def bulk_text(self, count: int) -> str:
        """What the bulk confirmation says."""
        return f"{self.label} {count} attempt{'s' if count != 1 else ''}"


def _can_reauthorize(a: Attempt) -> bool:
    # Engine.reauthorize's own rule: a FAILED attempt with an instance, not the quick flow.
    return a.state is State.FAILED and bool(a.instance_id) and a.flow is not Flow.QUICK


CANCEL = Action(
    "cancel", "Cancel",
    # Engine.cancel's own rule (states.CANCELLABLE): a connected attempt is disconnected, not cancelled.
    applies=lambda a: a.state in CANCELLABLE,
    explain=lambda a: f"Attempt {a.id} ({a.state}) stops where it is and becomes FAILED (cancelled).",
    run=lambda engine, attempt_id, actor: engine.cancel(attempt_id, actor=actor),
    bulk_states=tuple(s for s in State if s in CANCELLABLE),  # in the enum's order
    danger=True,
)
RESTART = Action(
    "restart", "Restart",
    applies=lambda a: next_state(Trigger.RESTART, a.state) is not None,
    explain=lambda a: (f"Attempt {a.id} goes back to NEW and runs again at once; its history is kept"
                       f"{' and it creates no second instance' if a.instance_id else ''}."),
    run=lambda engine, attempt_id, actor: engine.restart(attempt_id, actor=actor),
    bulk_states=(State.FAILED,),
)
REAUTHORIZE = Action(
    "reauthorize", "Reauthorize",
    applies=_can_reauthorize,
    explain=lambda a: (f"Attempt {a.id} asks the customer for consent again; instance {a.instance_id} is "
                       "re-authenticated in place (no new instance). Send them the new consent link once "
                       "the attempt is REDIRECTED."),
    run=lambda engine, attempt_id, actor: engine.reauthorize(attempt_id, actor=actor),
)
DISCONNECT = Action(
    "disconnect", "Disconnect",
    applies=lambda a: next_state(Trigger.DISCONNECT, a.state) is not None,
    explain=lambda a: (f"Attempt {a.id} is disconnected for good: the provider token the engine holds is "
                       f"revoked and instance {a.instance_id or '(none)'} is DELETED at Cloud Elements. "
                       "The customer must connect again from scratch."),
    run=lambda engine, attempt_id, actor: engine.disconnect(attempt_id, actor=actor),
    danger=True,
)
CONNECT_LINK = Action(
    "connect-link", "Copy connect link",
    applies=lambda a: a.state is State.REDIRECTED,
    explain=lambda a: (f"A new single-use connect link for attempt {a.id}: it takes the customer to the "
                       f"consent page once, until the consent deadline ({a.deadline_at:%Y-%m-%d %H:%M} UTC). "
                       if a.deadline_at else f"A new single-use connect link for attempt {a.id}: it takes "
                       "the customer to the consent page once. ")
                      + "Any link made before for this attempt stops working. The history records that "
                        "you made it; the link itself is shown to you once and never stored.",
    run=lambda engine, attempt_id, actor: engine.connect_link(attempt_id, actor=actor),
)
DEFAULT_ACTIONS: tuple[Action, ...] = (CONNECT_LINK, RESTART, REAUTHORIZE, DISCONNECT, CANCEL)
