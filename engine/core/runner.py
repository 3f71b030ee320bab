"""Running claimed steps: call the handler, classify errors, commit the decisions (DESIGN §4).

``StepRunner`` is given everything it uses; how a state's step is committed and which retry
policy applies is read off ``states.traits`` (no state is special-cased here).
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from engine.config import RenewalPolicy, RetryPolicy
from engine.core.kept import RotatedTokens, rotates
from engine.core.outage import database_error
from engine.core.parking import Parking, is_platform_wide
from engine.core.realm_claims import RealmClaims
from engine.core.retry import decide_on_error, decide_on_renewal_error, retrying
from engine.core.spool import TokenSpool
from engine.core.step_ports import LeaseRunningOutError, StepPorts
from engine.errors import ProvisionError
from engine.security.crypto import scrub, secret_values
from persistence.repository import Repository
from persistence.writes import Write, applied, chained, reschedule_write, transition_write
from states.attempt import Attempt, HistoryEntry
from states.decisions import Advance, Decision, Fail, RetryLater, Stay
from states.handlers import HANDLERS
from states.machine import next_state
from states.model import FailureReason, State, Trigger
from states.ports import ClientPort, StepSettings
from states.renewal import renewed
from states.traits import traits_of

log = logging.getLogger(__name__)

#: Pauses between tries of a renewal's commit before its token is spooled (issue 16 item 1).
ROTATED_COMMIT_WAITS = (0.5, 2.0)


class InternalStepError(ProvisionError):
    """A handler crashed with an unexpected exception; treated as transient so it is retried."""

    kind = "internal"
    transient = True


@dataclass(frozen=True)
class StepResult:
    """What one step did: ``advanced``, ``failed``, ``retry``, ``waiting``, ``lost`` or ``released``."""

    attempt_id: str
    outcome: str
    source: State
    dest: State | None = None
    steps: int = 1  # 2 when a step due at once ran under the same claim; 0 when released unstarted
    # What the worker's report lines show (engine.cli.reporting); empty on released/lost results.
    name: str = ""
    customer: str | None = None
    trigger: str | None = None
    duration_ms: int | None = None
    reason: str | None = None  # the failure reason, or the error kind of a retry


@dataclass(frozen=True)
class PreparedStep:
    """A step whose handler has run: its decision, not yet committed.

    ``before`` is the uncommitted write of the step that ran just before it under the same lease
    (``attempt`` is then the attempt as that write leaves it); both are committed as one write.
    """

    attempt: Attempt
    decision: Decision
    tries: int
    duration_ms: int
    before: Write | None = None
    # The step made no platform call: its lease ran out first (``LeaseRunningOutError``). The
    # scheduler releases the attempt instead of committing the decision.
    released: bool = False

    @property
    def urgent(self) -> bool:
        """Commit at once rather than with a group (``StepTraits.urgent`` of the step's state)."""
        return traits_of(self.attempt.state).urgent


@dataclass(frozen=True)
class _Planned:
    """A decision turned into its row write, with what to do once the write committed or lost."""

    write: Write
    decision: Decision
    outcome: str
    dest: State | None
    steps: int = 1  # steps whose results the write carries
    duration_ms: int | None = None


class StepRunner:
    """Runs the steps of claimed attempts and commits their decisions for one worker.

    ``apply_pending`` and ``reject_pending`` are the callback receiver's hooks, called after a
    commit: a committed redirect applies callbacks that arrived early; an attempt that failed
    before its redirect rejects them.
    """

    def __init__(self, repo: Repository, client: ClientPort, *, clock: Callable[[], datetime],
                 sleep: Callable[[float], None], policy: RetryPolicy, renewal_policy: RenewalPolicy,
                 rng: random.Random, worker_id: str, step_settings: StepSettings,
                 apply_pending: Callable[[str], None], reject_pending: Callable[[str, str], None],
                 parking: Parking | None = None, spool: TokenSpool | None = None) -> None:
        self.repo = repo
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.policy = policy
        self.renewal_policy = renewal_policy
        self.rng = rng
        self.worker_id = worker_id
        self.step_settings = step_settings
        self.apply_pending = apply_pending
        self.reject_pending = reject_pending
        self.parking = parking
        self.spool = spool
        self.kept = RotatedTokens(repo, spool, clock=clock, worker_id=worker_id)
        self.realms = RealmClaims(repo, clock=clock)  # the scheduler prepares it per tick

    def prepare(self, attempt: Attempt, *, may_chain: Callable[[], bool] = lambda: False,
                in_time: Callable[[], bool] = lambda: True) -> PreparedStep:
        """Run the handler of ``attempt``'s state (with in-process retries) and classify its errors.

        When the step advances to a state whose step is due at once (NEW -> TOKEN_ISSUED in the
        OAuth1 flow), is ``chainable``, and ``may_chain()`` says the lease has time left, that next
        step runs too, under the same lease: one claim and one row update fewer per attempt. Both
        results are committed together or, after a crash, both lost and both repeated, which is
        safe for the same reasons as a group commit (``PreparedStep.urgent``).

        ``in_time()`` is asked again before each step's first platform call; a step too late for
        it comes back ``released`` (a chained one leaves the step before it to be committed alone).
        """
        step = self._run_handler(attempt, in_time)
        chain = None if step.released or not may_chain() else self._chainable(step)
        if chain is None:
            return step
        second = self._run_handler(applied(chain), in_time)
        return step if second.released else replace(second, before=chain)

    def _chainable(self, step: PreparedStep) -> Write | None:
        """``step``'s write, if the step it leads to is due at once and may run under the same lease."""
        decision = step.decision
        if not isinstance(decision, Advance) or decision.next_run_at is None:
            return None
        if decision.next_run_at > self.clock():
            return None
        dest = next_state(decision.trigger, step.attempt.state)
        if dest is None or not traits_of(dest).chainable or dest not in HANDLERS:
            return None
        return self._plan(step.attempt, decision, tries=step.tries, duration_ms=step.duration_ms).write

    def _run_handler(self, attempt: Attempt, in_time: Callable[[], bool]) -> PreparedStep:
        handler = HANDLERS.get(attempt.state)
        if handler is None:  # terminal states are never due; release the lease defensively
            return PreparedStep(attempt, Stay(next_run_at=None), 1, 0)
        ports = StepPorts(self.client, self.step_settings, self.clock,
                          lambda: retrying(self.policy, sleep=self.sleep), self.realms.claim, in_time)
        started = time.monotonic()
        decision: Decision
        try:
            decision = handler(attempt, ports)
            if self.parking is not None:
                self.parking.clear()
        except LeaseRunningOutError:
            log.warning("attempt %s: the lease ran out before the %s step's first platform call (a slow "
                        "database?); released unstarted", attempt.id, attempt.state)
            return PreparedStep(attempt, Stay(next_run_at=attempt.next_run_at), 1,
                                int((time.monotonic() - started) * 1000), released=True)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker loop; log and retry later
            if ports.rotated:  # the provider rotated, then the step failed: the token goes first
                return PreparedStep(attempt, self._keep_rotated(attempt, ports, exc), max(ports.tries, 1),
                                    int((time.monotonic() - started) * 1000))
            if self.parking is not None and is_platform_wide(exc):
                # The engine's configuration, not the attempt, is wrong: leave the step as it was
                # (still due, nothing counted) and park the queue (engine.core.parking).
                self.parking.park(exc)
                return PreparedStep(attempt, Stay(next_run_at=attempt.next_run_at), max(ports.tries, 1), 0)
            if not isinstance(exc, ProvisionError):
                if (described := database_error(exc)) is not None:
                    # A step that reads the database (a realm claim) during an outage: one line,
                    # like the loop's (engine.core.outage); the traceback is for -vv.
                    log.warning("step %s of attempt %s: database error %s; retried", attempt.state,
                                attempt.id, described)
                    log.debug("step %s of attempt %s: the traceback", attempt.state, attempt.id, exc_info=exc)
                else:
                    log.exception("step %s of attempt %s crashed", attempt.state, attempt.id)
                exc = InternalStepError(f"unexpected {type(exc).__name__} in the {attempt.state} step")
            if traits_of(attempt.state).retry == "renewal":
                decision = decide_on_renewal_error(exc, attempt=attempt, policy=self.renewal_policy,
                                                   now=self.clock(), rng=self.rng)
            else:
                decision = decide_on_error(exc, failures=attempt.failures, policy=self.policy,
                                           now=self.clock(), rng=self.rng)
        duration_ms = int((time.monotonic() - started) * 1000)
        if (isinstance(decision, RetryLater) and traits_of(attempt.state).retry == "onboarding"
                and attempt.failures >= self.policy.budget):
            # A handler's own RetryLater (an ambiguous create) counts against the same budget as errors.
            decision = Fail(FailureReason.RETRIES_EXHAUSTED,
                            {**decision.error, "attempts": attempt.failures + 1}, secrets=decision.secrets)
        if isinstance(decision, (Fail, RetryLater)) and decision.error:
            # A platform that echoes a token in its error text must not get it stored in plain text.
            decision = replace(decision, error=scrub(decision.error, secret_values(attempt.secrets)))
        return PreparedStep(attempt, decision, max(ports.tries, 1), duration_ms)

    def _keep_rotated(self, attempt: Attempt, ports: StepPorts, exc: Exception) -> Decision:
        """A step that failed after its provider call rotated the token: store the token anyway.

        Whatever raised after the answer (a handler bug, an odd field, a broken clock), the old token
        is spent; so the step's decision becomes the complete renewal (tokens, ``refresh_time``,
        ``next_renewal_at``, a push due at once) that commits, retries and spools like any other
        (issue 16 item 1). The error is logged by type only: its text may quote the answer.
        """
        log.error("attempt %s: %s after the provider rotated the token; the new token is stored first",
                  attempt.id, type(exc).__name__)
        tokens = {**(attempt.secrets.get("user_tokens") or {}), **ports.rotated}
        return renewed(attempt, ports, tokens, f"renewal kept after {type(exc).__name__}"[:200])

    def commit(self, steps: list[PreparedStep]) -> list[StepResult]:
        """Commit the decisions of several steps in one transaction (the worker's group commit).

        Callbacks that arrived before a redirect was committed are looked up for the whole group
        in one query instead of one per attempt.
        """
        plans = [self._plan_step(s) for s in steps]
        if len(plans) == 1:
            return [self._settle(plans[0], self._apply(plans[0]), check_pending=True)]
        try:
            done = self.repo.apply_many([p.write for p in plans])
        except Exception:
            self.kept.spool([(p.write.attempt.id, p.decision) for p in plans])
            raise
        outcomes = list(zip(plans, done, strict=True))
        redirected = [p.write.attempt.id for p, ok in outcomes if ok and p.dest is State.REDIRECTED]
        waiting = self.repo.attempts_with_pending_callbacks(redirected) if redirected else set()
        return [self._settle(p, ok, check_pending=p.write.attempt.id in waiting) for p, ok in outcomes]

    def _apply(self, plan: _Planned) -> bool:
        """Commit one write; a rotated token is retried, then spooled (issue 16 item 1).

        A retry after an ambiguous failure (the COMMIT may have reached the database) finds the
        version moved and returns False: ``_settle`` then merges the same token again, harmlessly.
        """
        if not rotates(plan.decision):
            return self.repo.apply(plan.write)
        for wait in (*ROTATED_COMMIT_WAITS, None):
            try:
                return self.repo.apply(plan.write)
            except Exception:
                if wait is None:
                    self.kept.spool([(plan.write.attempt.id, plan.decision)])
                    raise
                log.warning("attempt %s: the renewal's commit failed; retrying in %gs",
                            plan.write.attempt.id, wait, exc_info=True)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def spool_uncommitted(self, steps: Iterable[PreparedStep | None]) -> None:
        """Keep the rotated tokens of prepared steps that a failed tick will not commit.

        A step that raised in its own thread carries no decision and is skipped (it rotated
        nothing that reached us); the next tick drains what was kept.
        """
        kept: list[tuple[str, Decision]] = []
        try:
            kept.extend((s.attempt.id, s.decision) for s in steps if s is not None)
        except Exception:  # noqa: BLE001 - a thread's own error; keep what came before it
            log.exception("a step of the failed tick raised too")
        self.kept.spool(kept)

    def drain_spool(self) -> int:
        """Write spooled renewals into the database (each tick, before claiming); returns how many."""
        return self.kept.drain()

    def release(self, attempt: Attempt) -> StepResult:
        """Give back a claimed attempt without running its step (it stays due).

        ``lost`` instead of ``released`` when the lease was no longer ours to give back.
        """
        released = self.repo.apply(reschedule_write(attempt, owner=self.worker_id, now=self.clock(),
                                                    next_run_at=attempt.next_run_at, error=None,
                                                    count_failure=False))
        return StepResult(attempt.id, "released" if released else "lost", attempt.state, steps=0)

    def _plan_step(self, step: PreparedStep) -> _Planned:
        planned = replace(self._plan(step.attempt, step.decision, tries=step.tries,
                                     duration_ms=step.duration_ms), duration_ms=step.duration_ms)
        if step.before is None:
            return planned
        return replace(planned, write=chained(step.before, planned.write), steps=2)

    def _plan(self, attempt: Attempt, decision: Decision, *, tries: int, duration_ms: int) -> _Planned:
        now = self.clock()
        owner = self.worker_id
        total_tries = attempt.failures + tries
        if isinstance(decision, Advance):
            dest = next_state(decision.trigger, attempt.state)
            if dest is None:
                raise AssertionError(f"handler chose {decision.trigger} from {attempt.state}")
            entry = HistoryEntry.after(attempt, decision.trigger.value, dest, now, worker=self.worker_id,
                                       tries=total_tries, duration_ms=duration_ms, note=decision.note,
                                       error=attempt.last_error if total_tries > 1 else None)
            return _Planned(transition_write(attempt, entry, owner=owner, now=now,
                                             next_run_at=decision.next_run_at, changes=decision.changes,
                                             secret_updates=decision.secrets or None),
                            decision, "advanced", dest)
        renewal = traits_of(attempt.state).retry == "renewal"
        if isinstance(decision, Stay):
            changes = decision.changes
            if renewal and attempt.renewal_failing_since is not None:
                # The platform or provider answered: this renewal's failure streak is over.
                changes = {**(changes or {}), "renewal_failing_since": None}
            stay = reschedule_write(attempt, owner=owner, now=now, next_run_at=decision.next_run_at,
                                    error=None, count_failure=False, changes=changes,
                                    secret_updates=decision.secrets or None)
            return _Planned(stay, decision, "waiting", None)
        if isinstance(decision, Fail):
            entry = HistoryEntry.after(attempt, Trigger.FAIL.value, State.FAILED, now, worker=self.worker_id,
                                       outcome="failed", tries=total_tries, duration_ms=duration_ms,
                                       error=decision.error, note=decision.reason.value)
            return _Planned(transition_write(attempt, entry, owner=owner, now=now, next_run_at=None,
                                             changes=decision.changes or None,
                                             failure_reason=decision.reason.value, last_error=decision.error,
                                             secret_updates=decision.secrets or None),
                            decision, "failed", State.FAILED)
        if isinstance(decision, RetryLater):
            first = renewal and attempt.renewal_failing_since is None
            retry = reschedule_write(attempt, owner=owner, now=now, next_run_at=decision.at,
                                     error=decision.error, count_failure=True,
                                     secret_updates=decision.secrets or None,
                                     changes={"renewal_failing_since": now} if first else None)
            return _Planned(retry, decision, "retry", None)
        return _Planned(reschedule_write(attempt, owner=owner, now=now, next_run_at=decision.deadline,
                                         error=None, count_failure=False), decision, "waiting", None)

    def _settle(self, planned: _Planned, ok: bool, *, check_pending: bool) -> StepResult:
        """What follows a committed (or lost) write: pending callbacks, a kept token, log lines."""
        attempt, decision = planned.write.attempt, planned.decision
        if ok and planned.dest is State.REDIRECTED and check_pending:
            self.apply_pending(attempt.id)
        if not ok and rotates(decision):
            assert isinstance(decision, Advance)
            # The provider already rotated the token: keep it even though our transition lost.
            self.kept.recover(attempt.id, decision.secrets, decision.changes,
                              note=f"{decision.note}, kept after a lost lease")
        if ok and isinstance(decision, Fail):
            log.info("attempt %s failed: %s", attempt.id, decision.reason.value)
            if attempt.state in (State.NEW, State.TOKEN_ISSUED):
                self.reject_pending(attempt.id, f"attempt failed before its redirect "
                                                f"({decision.reason.value})")
        if ok and isinstance(decision, RetryLater):
            log.info("attempt %s step %s: %s; retry at %s", attempt.id, attempt.state,
                     decision.error.get("kind"), decision.at.isoformat())
        if not ok:
            # Our lease expired and someone else moved the attempt: our work is discarded (DESIGN §4.3).
            log.warning("attempt %s: lease lost during %s step; result discarded", attempt.id, attempt.state)
            return StepResult(attempt.id, "lost", attempt.state, steps=planned.steps)
        return StepResult(attempt.id, planned.outcome, attempt.state, planned.dest, steps=planned.steps,
                          **_report_fields(attempt, decision, planned.duration_ms))


def _report_fields(attempt: Attempt, decision: Decision, duration_ms: int | None) -> dict[str, Any]:
    """The fields of a ``StepResult`` that a worker's report line shows."""
    reason = None
    if isinstance(decision, Fail):
        reason = decision.reason.value
    elif isinstance(decision, RetryLater):
        reason = str((decision.error or {}).get("kind") or "error")
    trigger = decision.trigger.value if isinstance(decision, Advance) else (
        Trigger.FAIL.value if isinstance(decision, Fail) else None)
    # ``customer`` arrives with another change (issue 18); read it defensively until then.
    return {"name": attempt.name, "customer": getattr(attempt, "customer", None), "trigger": trigger,
            "duration_ms": duration_ms, "reason": reason}
