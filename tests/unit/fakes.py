"""Recording fakes for the pure core: a platform client and the ports a handler sees.

Imported as ``unit.fakes`` (``tests/`` is on ``sys.path`` for pytest and on ``mypy_path``).

- ``FakeClient`` implements ``states.ports.ClientPort``. Every call is recorded as a ``Call``
  (method name, positional and keyword arguments exactly as the handler passed them); each method
  answers from its own script, one outcome per call: a value is returned, an exception raised.
  An unscripted call fails the test. The methods accept any arguments, so a port whose signature
  grows (``reconnect_oauth1`` signing with the consumer and token secrets, paged instance listing)
  needs only the expected ``Call`` values edited, not the fake.
- ``FakePorts`` implements ``states.ports.Ports``: the clock is an ``engine.clock.FakeClock`` (the
  one fake-clock mechanism of the suite), ``call`` runs the function up to ``max_tries`` times and
  retries only transient ``ProvisionError``s (as the engine's tenacity wrapper does), nonces count
  up (``nonce-1``, ``nonce-2``...) and ``digest`` is a readable marker (``digest(text)``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from engine.clients.provider import OAuth2Tokens, ReconnectResult, RenewalRejectedError
from engine.clock import FakeClock
from engine.errors import ProvisionError
from states.attempt import Attempt
from states.model import Flow, State
from states.ports import ClientPort, StepSettings

T = TypeVar("T")

# The provider client's "re-authorise" error (invalid_grant, Reconnect 270), re-exported so that
# a move of the clients package touches this one import.
__all__ = ["RenewalRejectedError"]

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
QBO_CONFIG: dict[str, str] = {
    "oauth.api.key": "dev-consumer-key",
    "oauth.api.secret": "dev-consumer-secret",
    "oauth.callback.url": "https://app.example.com/cb",
}


@dataclass(frozen=True)
class Call:
    """One recorded client call."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Token:
    """An OAuth1 request-token answer (``states.ports.TokenLike``)."""

    token: str
    secret: str


class Tokens(OAuth2Tokens):
    """An OAuth2 refresh-token grant answer: the client's own type (``rotated()`` included)."""


@dataclass(frozen=True)
class Reconnect(ReconnectResult):
    """An Intuit Reconnect answer: ``code`` 0 carries the new token and secret."""

    message: str = ""


class NetworkUsedError(AssertionError):
    """A unit test tried to open a network connection (``tests/unit/conftest.py`` refuses them)."""


class UnscriptedCallError(AssertionError):
    """The handler made a call the test did not script (so did not expect)."""


class FakeClient:
    """A ``ClientPort`` that records every call and answers from per-method scripts."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._scripts: dict[str, list[Any]] = {}

    def script(self, method: str, *outcomes: Any) -> FakeClient:
        """Queue ``outcomes`` for ``method``: each call takes the next (an exception is raised)."""
        if not hasattr(self, method):
            raise AttributeError(f"FakeClient has no method {method!r} to script")
        self._scripts.setdefault(method, []).extend(outcomes)
        return self

    def unused(self) -> dict[str, list[Any]]:
        """Scripted outcomes no call consumed (a test asserts this is empty)."""
        return {m: list(q) for m, q in self._scripts.items() if q}

    def _answer(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.calls.append(Call(method, args, dict(kwargs)))
        queue = self._scripts.get(method)
        if not queue:
            raise UnscriptedCallError(f"unexpected call {method}{args}{kwargs}")
        outcome = queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def request_token(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("request_token", args, kwargs)

    def oauth_url(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("oauth_url", args, kwargs)

    def create_instance(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("create_instance", args, kwargs)

    def find_instances_by_tag(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("find_instances_by_tag", args, kwargs)

    def get_instance(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("get_instance", args, kwargs)

    def update_instance(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("update_instance", args, kwargs)

    def delete_instance(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("delete_instance", args, kwargs)

    def refresh_oauth2(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("refresh_oauth2", args, kwargs)

    def reconnect_oauth1(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("reconnect_oauth1", args, kwargs)

    def revoke_oauth2(self, *args: Any, **kwargs: Any) -> None:
        self._answer("revoke_oauth2", args, kwargs)

    def check_provider_token(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._answer("check_provider_token", args, kwargs))


class FakePorts:
    """The ``Ports`` of one step, with a settable clock and scripted retries."""

    def __init__(self, client: FakeClient, clock: FakeClock, *, settings: StepSettings | None = None,
                 max_tries: int = 1) -> None:
        self.fake = client
        self.client: ClientPort = client  # the Protocol attribute; tests read ``fake``
        self.clock = clock
        self.settings = settings or StepSettings()
        self.max_tries = max_tries
        self.try_numbers: list[int] = []  # every try number ``call`` passed, in order
        self._nonces = 0
        self.realm_holders: dict[str, str] = {}  # realmId -> the attempt holding it (claim_realm)

    def now(self) -> datetime:
        return self.clock()

    def call(self, fn: Callable[[int], T]) -> T:
        for n in range(1, self.max_tries + 1):
            self.try_numbers.append(n)
            try:
                return fn(n)
            except ProvisionError as exc:
                if not exc.transient or n == self.max_tries:
                    raise
        raise AssertionError("unreachable: the last try returns or raises")

    def new_nonce(self) -> str:
        self._nonces += 1
        return f"nonce-{self._nonces}"

    def digest(self, text: str) -> str:
        return f"digest({text})"

    def claim_realm(self, attempt: Attempt, realm_id: str) -> str | None:
        holder = self.realm_holders.setdefault(realm_id, attempt.id)
        return None if holder in (attempt.id, attempt.replaces) else holder


def make_attempt(state: State, flow: Flow, *, element: str = "quickbooks", runs: int = 1,
                 config: dict[str, Any] | None = None, secrets: dict[str, Any] | None = None,
                 tags: Iterable[str] = (), **columns: Any) -> Attempt:
    """An attempt in ``state`` as a claimed step sees it; ``config`` defaults to the QuickBooks app."""
    blob: dict[str, Any] = {"config": dict(QBO_CONFIG if config is None else config)}
    blob.update(secrets or {})
    return Attempt(id="att-1", element_key=element, flow=flow, name="Acme books", state=state, version=3,
                   created_at=T0, updated_at=T0, tags=tuple(tags), runs=runs, secrets=blob, **columns)


def ms(moment: datetime) -> int:
    """``moment`` as epoch milliseconds (the platform's ``oauth.user.refresh_time``)."""
    return int(moment.timestamp() * 1000)
