"""The one place that builds a ``transitions.Machine`` from ``states.model.TRANSITIONS``.

The engine never constructs a Machine per step: ``NEXT_STATE`` is read off one Machine built at
import time, so checking a transition is a dict lookup (see issue 6/6 on per-step overhead).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transitions import Machine

from states.model import TRANSITIONS, State, Trigger


def build_machine(model: Any = None, initial: State = State.NEW, **kwargs: Any) -> Machine:
    """Return a ``transitions.Machine`` (or ``machine_cls`` from kwargs) over the machine data.

    Enum states and the transition list are passed as data; no callbacks are resolved by name.
    """
    machine_cls = kwargs.pop("machine_cls", Machine)
    machine: Machine = machine_cls(
        model=model,
        states=list(State),
        transitions=[
            {"trigger": t.trigger.value, "source": t.source, "dest": t.dest} for t in TRANSITIONS
        ],
        initial=initial,
        auto_transitions=False,
        **kwargs,
    )
    return machine


def _read_table(machine: Machine) -> dict[tuple[Trigger, State], State]:
    table: dict[tuple[Trigger, State], State] = {}
    for name, event in machine.events.items():
        for source, edges in event.transitions.items():
            for edge in edges:
                table[(Trigger(name), State[source])] = State[str(edge.dest)]
    return table


_MACHINE = build_machine()
NEXT_STATE: dict[tuple[Trigger, State], State] = _read_table(_MACHINE)


def next_state(trigger: Trigger, source: State) -> State | None:
    """The state ``trigger`` leads to from ``source``, or None when the machine forbids it."""
    return NEXT_STATE.get((trigger, source))


def invalid_step(steps: Iterable[tuple[Trigger | str, State | str, State | str]]) -> str | None:
    """Check that a sequence of ``(trigger, source, dest)`` is a connected path of the machine.

    Returns None for a valid path starting at NEW, otherwise a sentence naming the first bad step.
    Used by tests and by ``provision show`` to prove histories have no gap and no illegal move.
    """
    expected: State = State.NEW
    for i, (trigger, source, dest) in enumerate(steps, start=1):
        trig, src, dst = Trigger(trigger), State(source), State(dest)
        if src is not expected:
            return f"step {i} ({trig}) starts at {src} but the previous step ended at {expected}"
        if next_state(trig, src) is not dst:
            return f"step {i}: {trig} does not lead from {src} to {dst}"
        expected = dst
    return None
