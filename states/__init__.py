"""The provisioning state machine: states, transitions as data, and one pure handler per state."""
from states.attempt import Attempt, HistoryEntry
from states.decisions import Advance, Decision, Fail, RetryLater, WaitForCallback
from states.machine import build_machine, invalid_step, next_state
from states.model import HAPPY_PATHS, TERMINAL, TRANSITIONS, FailureReason, Flow, State, Transition, Trigger

__all__ = [
    "Advance", "Attempt", "Decision", "Fail", "FailureReason", "Flow", "HAPPY_PATHS", "HistoryEntry",
    "RetryLater", "State", "TERMINAL", "TRANSITIONS", "Transition", "Trigger", "WaitForCallback",
    "build_machine", "invalid_step", "next_state",
]
