"""How each state's step is run and committed, as data next to the machine (``states.model``).

The runner consults ``traits_of(state)`` instead of special-casing states:

- ``urgent``: commit the step's result at once, not with a group. Re-running the step could not
  recreate its result (a renewal may have rotated the refresh token, which invalidates the stored
  one). The onboarding steps are safe to repeat after a crash (a new request token or consent URL
  nobody has seen yet; an instance created but not recorded is adopted by its tag).
- ``chainable``: the step may run right after the previous step under the same lease, both
  results committed as one write (they are then lost, and repeated, together).
- ``retry``: which retry policy classifies the step's errors: ``"onboarding"`` (the engine's
  ``RetryPolicy``) or ``"renewal"`` (``RenewalPolicy``: a rejected renewal fails the attempt, a
  transient one is retried until the token expires).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from states.model import State

RetryKind = Literal["onboarding", "renewal"]


@dataclass(frozen=True)
class StepTraits:
    """How the step of one state is run and committed (see the module docstring)."""

    urgent: bool = False
    chainable: bool = True
    retry: RetryKind = "onboarding"


ONBOARDING = StepTraits()

STEP_TRAITS: dict[State, StepTraits] = {
    State.NEW: ONBOARDING,
    State.TOKEN_ISSUED: ONBOARDING,
    State.REDIRECTED: ONBOARDING,
    State.CALLBACK_RECEIVED: ONBOARDING,
    State.PROVISIONED: StepTraits(urgent=True, chainable=False, retry="renewal"),
    State.FAILED: ONBOARDING,  # terminal: no step runs
    # Revoke then delete: both are safe to repeat (a revoked token revokes again with 200, a
    # deleted instance answers 404 = gone), so the step commits like onboarding steps do.
    State.DISCONNECTING: ONBOARDING,
    State.DISCONNECTED: ONBOARDING,  # terminal: no step runs
}


def traits_of(state: State) -> StepTraits:
    """The traits of ``state``'s step."""
    return STEP_TRAITS[state]
