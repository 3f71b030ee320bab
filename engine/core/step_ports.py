"""The ports one step's handler sees (``states.ports.Ports``), bound to the worker's parts."""
from __future__ import annotations

import secrets as pysecrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from engine.core.retry import call_with_retries
from engine.errors import ProvisionError
from engine.security.crypto import digest
from states.attempt import Attempt
from states.ports import ClientPort, StepSettings

T = TypeVar("T")


class LeaseRunningOutError(ProvisionError):
    """A step's first platform call would start too late to finish and commit inside its lease.

    Raised by ``StepPorts.call`` before anything is sent; the step is then released unstarted
    (``PreparedStep.released``), never counted as a failure.
    """

    kind = "lease_running_out"
    transient = True


@dataclass
class StepPorts:
    """The ports one step sees; counts in-process tries for the history row."""

    client: ClientPort
    settings: StepSettings
    clock: Callable[[], datetime]
    retry_factory: Callable[[], Any]
    realms: Callable[[Attempt, str], str | None]
    # Whether a step that starts now can still finish and commit inside its lease (the
    # scheduler's ``in_time``). Checked again before the step's first platform call: the handler
    # may have waited for the database before it (a realm claim behind a locked SQLite file).
    in_time: Callable[[], bool] = lambda: True
    tries: int = 0
    started: bool = False
    waits: list[float] = field(default_factory=list)
    # The user-token entries a provider call of this step rotated (``rotated()`` of its answer),
    # recorded the moment the answer is parsed: the old token is spent from then on.
    rotated: dict[str, str] = field(default_factory=dict)

    def now(self) -> datetime:
        return self.clock()

    def call(self, fn: Callable[[int], T]) -> T:
        if not self.started:
            # A platform call sent after the lease ran out can race the next holder of the step:
            # its tag look-up finds nothing yet, it POSTs, and then this late POST creates a second
            # instance that nobody records (issue 16 item 8). The lease covers a step only from
            # its first call on (``Engine._check_lease``), so that call must start in time.
            if not self.in_time():
                raise LeaseRunningOutError("the step's lease runs out before its first platform call "
                                           "could finish and commit; the step is released unstarted",
                                           hint="Nothing to do: a worker runs the step again.")
            self.started = True

        def counted(n: int) -> T:
            self.tries += 1
            return fn(n)

        result = call_with_retries(self.retry_factory(), counted)
        rotated = getattr(result, "rotated", None)
        if callable(rotated):
            self.rotated.update(rotated())
        return result

    def new_nonce(self) -> str:
        return pysecrets.token_urlsafe(32)

    def digest(self, text: str) -> str:
        return digest(text)

    def claim_realm(self, attempt: Attempt, realm_id: str) -> str | None:
        return self.realms(attempt, realm_id)
