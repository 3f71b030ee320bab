"""The machine data, the transitions Machine built from it, and path checking."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from states import HAPPY_PATHS, TRANSITIONS, Flow, State, Trigger, build_machine, invalid_step, next_state
from states.handlers import HANDLERS
from states.machine import NEXT_STATE


def test_every_transition_of_design_section_2_is_data() -> None:
    edges = {(t.trigger, t.source, t.dest) for t in TRANSITIONS}
    assert (Trigger.ISSUE_TOKEN, State.NEW, State.TOKEN_ISSUED) in edges
    assert (Trigger.REDIRECT, State.TOKEN_ISSUED, State.REDIRECTED) in edges
    assert (Trigger.REDIRECT, State.NEW, State.REDIRECTED) in edges
    assert (Trigger.RECEIVE_CALLBACK, State.REDIRECTED, State.CALLBACK_RECEIVED) in edges
    assert (Trigger.PROVISION, State.CALLBACK_RECEIVED, State.PROVISIONED) in edges
    assert (Trigger.QUICK_PROVISION, State.NEW, State.PROVISIONED) in edges
    assert (Trigger.RENEW, State.PROVISIONED, State.PROVISIONED) in edges
    assert (Trigger.REMOVE_DUPLICATE, State.PROVISIONED, State.PROVISIONED) in edges  # issue 16 item 8
    assert (Trigger.RESTART, State.FAILED, State.NEW) in edges
    assert (Trigger.REAUTHORIZE, State.FAILED, State.NEW) in edges
    for s in (State.NEW, State.TOKEN_ISSUED, State.REDIRECTED, State.CALLBACK_RECEIVED, State.PROVISIONED):
        assert (Trigger.FAIL, s, State.FAILED) in edges
    assert (Trigger.FAIL, State.FAILED, State.FAILED) not in edges
    assert len(edges) == len(TRANSITIONS) == 21


def test_lookup_table_matches_a_live_machine() -> None:
    """NEXT_STATE is read off the Machine; a model driven through it must agree on every edge."""
    assert {(t.trigger, t.source): t.dest for t in TRANSITIONS} == NEXT_STATE

    class Model:
        state: State
        trigger: Callable[[str], bool]  # added by build_machine

    for t in TRANSITIONS:
        model = Model()
        build_machine(model, initial=t.source)
        assert model.trigger(t.trigger.value) is True
        assert model.state is t.dest


def test_machine_refuses_moves_not_in_the_data() -> None:
    class Model:
        state: State
        trigger: Callable[[str], bool]  # added by build_machine

    model = Model()
    build_machine(model, initial=State.NEW)
    from transitions import MachineError

    with pytest.raises(MachineError):
        model.trigger(Trigger.PROVISION.value)
    assert next_state(Trigger.PROVISION, State.NEW) is None
    assert next_state(Trigger.RESTART, State.PROVISIONED) is None


@pytest.mark.parametrize("flow", list(Flow))
def test_happy_paths_are_valid_paths(flow: Flow) -> None:
    state = State.NEW
    steps = []
    for trig in HAPPY_PATHS[flow]:
        dest = next_state(trig, state)
        assert dest is not None
        steps.append((trig, state, dest))
        state = dest
    assert state is State.PROVISIONED
    assert invalid_step(steps) is None


def test_invalid_step_names_gaps_and_illegal_moves() -> None:
    gap = [("issue_token", "NEW", "TOKEN_ISSUED"), ("receive_callback", "REDIRECTED", "CALLBACK_RECEIVED")]
    assert "step 2" in (invalid_step(gap) or "")
    illegal = [("provision", "NEW", "PROVISIONED")]
    assert "does not lead" in (invalid_step(illegal) or "")


def test_one_handler_per_state_that_a_worker_acts_on() -> None:
    # PROVISIONED's handler renews tokens; FAILED waits for an operator.
    assert set(HANDLERS) == set(State) - {State.FAILED, State.DISCONNECTED}
