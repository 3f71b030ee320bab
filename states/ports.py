"""What a handler may use (ports): the platform client, the clock, retries, randomness."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from states.attempt import Attempt

T = TypeVar("T")


class TokenLike(Protocol):
    """An OAuth1 request token answer (read-only attributes)."""

    @property
    def token(self) -> str: ...

    @property
    def secret(self) -> str: ...


class ClientPort(Protocol):
    """The subset of ``engine.clients.elements.ElementsClient`` the steps call."""

    def request_token(
        self, element: str, *, api_key: str, api_secret: str, callback_url: str
    ) -> TokenLike: ...

    def oauth_url(self, element: str, params: Mapping[str, str]) -> str: ...

    def create_instance(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def find_instances_by_tag(self, tag: str) -> list[dict[str, Any]]: ...

    def get_instance(self, instance_id: str) -> dict[str, Any]: ...

    def update_instance(self, instance_id: str, body: Mapping[str, Any], *, method: str = "PATCH",
                        reauthenticate: bool = False) -> dict[str, Any]: ...

    def delete_instance(self, instance_id: str) -> None:
        """DELETE /instances/{id}; an instance already gone (404) counts as deleted."""
        ...

    def refresh_oauth2(self, client_id: str, client_secret: str, refresh_token: str) -> Any: ...

    def revoke_oauth2(self, client_id: str, client_secret: str, token: str) -> None: ...

    def reconnect_oauth1(self, consumer_key: str, consumer_secret: str, token: str,
                         token_secret: str) -> Any: ...

    def check_provider_token(self, realm_id: str, *, sandbox_company: bool, access_token: str | None = None,
                             oauth1: tuple[str, str, str, str] | None = None) -> bool:
        """Whether the provider still accepts the user's token (a read that rotates nothing)."""
        ...


class PlatformPort(ClientPort, Protocol):
    """What the engine itself needs of the client besides the steps' calls."""

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds of one HTTP call: the engine sizes its lease from them."""
        ...

    def close(self) -> None:
        """Release pooled connections."""
        ...

    def get_element(self, element: str) -> dict[str, Any]:
        """GET /elements/{key} (``Engine.verify_element``); ``NotFoundApiError`` for an unknown key."""
        ...


@dataclass(frozen=True)
class StepSettings:
    """Tunables the steps read."""

    callback_wait_s: int = 1800  # DESIGN §6: 30 minutes for the user to consent
    # Renew this long before the token's due time at most (never more than 10% of the interval).
    renewal_max_lead_s: int = 15 * 60
    # After an ambiguous create, no second POST before a tag look-up this long after the first
    # POST (the engine passes 3x the read timeout, at least 5 s, or PROVISION_CREATE_SETTLE_SECONDS).
    create_settle_s: float = 90.0


class Ports(Protocol):
    """Everything a handler can touch; the engine supplies the real implementation."""

    client: ClientPort
    settings: StepSettings

    def now(self) -> datetime: ...

    def call(self, fn: Callable[[int], T]) -> T:
        """Run ``fn(try_number)`` with in-process retries for transient errors."""
        ...

    def new_nonce(self) -> str: ...

    def digest(self, text: str) -> str: ...

    def claim_realm(self, attempt: Attempt, realm_id: str) -> str | None:
        """Claim ``realm_id`` of ``attempt``'s element for it, race-safely (``states.realm``).

        None when the attempt holds the claim now; else the id of the live attempt holding it.
        """
        ...
