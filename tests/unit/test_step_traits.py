"""How each state's step is committed is data on the machine (``states.traits``), not runner code."""
from __future__ import annotations

from states.handlers import HANDLERS
from states.model import State
from states.traits import STEP_TRAITS, traits_of


def test_every_state_has_traits() -> None:
    assert set(STEP_TRAITS) == set(State)


def test_only_renewals_are_urgent_unchained_and_use_the_renewal_policy() -> None:
    special = {s for s in State if traits_of(s).urgent or not traits_of(s).chainable
               or traits_of(s).retry != "onboarding"}
    assert special == {State.PROVISIONED}
    assert traits_of(State.PROVISIONED).retry == "renewal"


def test_every_state_with_a_step_is_chainable_or_urgent() -> None:
    # An urgent step must commit alone, so it may never ride on another step's write.
    for state in HANDLERS:
        assert traits_of(state).chainable != traits_of(state).urgent
