"""The one exception tree of element-provisioner: ``ProvisionError`` and its ``...Error`` subclasses.

Errors coming from the platform keep its ``message``, ``providerMessage`` and ``requestId`` and add a
``hint`` that says what to do. ``to_dict()`` is the structured form stored in ``attempts.last_error``
and in history rows; it never contains secrets (the client builds messages without URLs or bodies).
"""
from __future__ import annotations

from typing import Any

# What to do about each kind of platform error (shown by `provision show` and stored with the error).
HINTS: dict[str, str] = {
    "unavailable": "Transient platform failure; the engine retries automatically.",
    "rate_limited": (
        "The platform or provider throttled us; the engine waits (honouring Retry-After) and "
        "retries."
    ),
    "timeout": (
        "The platform did not answer in time; the engine retries. Raise the client timeout if "
        "this persists."
    ),
    "connection": (
        "Could not reach the platform; check ELEMENTS_BASE_URL and the network. The engine "
        "retries."
    ),
    "malformed_response": (
        "The platform answered with something that is not the expected JSON; "
        "the engine retries."
    ),
    "bad_request": "The platform refused the request; its message names what to fix.",
    "missing_configuration": (
        "Pass the missing entries in config (or the matching keyword argument, such as "
        "api_key or callback_url) and start the attempt again."
    ),
    "unauthorized": "Check ELEMENTS_USER_SECRET and ELEMENTS_ORG_SECRET: the platform rejected them.",
    "forbidden": (
        "The provider refused access (instance disabled or app not allowed); re-authorise or "
        "enable it."
    ),
    "not_found": "Check the element key (for example quickbooks, sfdc, hubspot) or the instance id.",
    "conflict": "The platform reports a conflict; check for an existing instance with the same name or tag.",
    "invalid_database": (
        "Development keys can only connect sandbox companies: use the app's production keys "
        "(oauth.api.key / oauth.api.secret), or connect a sandbox company."
    ),
    "provider_rejected": (
        "The provider rejected the authorisation (expired or reused code/verifier); start a new "
        "attempt."
    ),
}


class ProvisionError(Exception):
    """Base of every error the engine raises on purpose."""

    kind: str = "error"
    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else HINTS.get(self.kind)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"

    def to_dict(self) -> dict[str, Any]:
        """Structured, secret-free form for persistence and ``--json`` output."""
        return {"kind": self.kind, "message": self.message, "hint": self.hint}


class InvalidInputError(ProvisionError):
    """Bad input from a caller (CLI exit code 2); ``field`` names what to fix."""

    kind = "invalid_input"

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}", hint=hint)
        self.field = field


class MissingConfigurationError(InvalidInputError):
    """Required configuration entries are missing; refused before any HTTP call."""

    kind = "missing_configuration"

    def __init__(self, element: str, flow: str, missing: list[str]) -> None:
        self.missing = sorted(missing)
        super().__init__(
            "configuration",
            f"element {element!r} with flow {flow} needs {', '.join(self.missing)}",
            hint=HINTS["missing_configuration"],
        )


class DuplicateConnectionError(InvalidInputError):
    """A live attempt already connects this customer to this element (issue 10/12 must-have 3)."""

    kind = "duplicate_connection"

    def __init__(self, customer: str, element: str, live_attempt_id: str, live_state: str) -> None:
        super().__init__(
            "customer",
            f"customer {customer!r} already has a live {element} attempt {live_attempt_id} ({live_state})",
            hint="Use that attempt, or start again with replace=True to disconnect it once the new "
                 "one is PROVISIONED.",
        )
        self.live_attempt_id = live_attempt_id


class UnknownElementError(InvalidInputError):
    """The platform does not know the element key given to ``start`` (``verify_element=True``)."""

    kind = "unknown_element"

    def __init__(self, element: str) -> None:
        super().__init__("element", f"the platform has no element {element!r} (GET /elements/{{key}} "
                                    "answered 404)",
                         hint="Check the element key (for example quickbooks, sfdc, hubspot); to start "
                              "without asking the platform, pass verify_element=False.")
        self.element = element


class ElementCheckUnavailableError(ProvisionError):
    """The platform could not be asked whether an element exists (it is down or refuses us)."""

    kind = "element_check_unavailable"

    def __init__(self, element: str, cause: str) -> None:
        super().__init__(f"cannot check element {element!r} with the platform: {cause}",
                         hint="Retry when the platform answers (check ELEMENTS_BASE_URL and the "
                              "network), or start without the check: verify_element=False.")
        self.field = "verify_element"
        self.element = element


class AttemptNotFoundError(ProvisionError):
    """No attempt has the given id."""

    kind = "attempt_not_found"

    def __init__(self, attempt_id: str) -> None:
        super().__init__(f"no attempt with id {attempt_id!r}", hint="List attempts with Engine.list().")
        self.attempt_id = attempt_id


class InvalidTransitionError(ProvisionError):
    """An operator action asked for a move the machine does not allow from the current state."""

    kind = "invalid_transition"


class ConcurrentUpdateError(ProvisionError):
    """Someone else changed the attempt between read and write; re-read and try again."""

    kind = "concurrent_update"


class CallbackRejectedError(ProvisionError):
    """A callback did not match any attempt waiting for one; nothing was changed."""

    kind = "callback_rejected"

    def __init__(self, reason: str, *, attempt_id: str | None = None) -> None:
        super().__init__(f"callback rejected: {reason}", hint=None)
        self.reason = reason
        self.attempt_id = attempt_id


class SecretKeyError(ProvisionError):
    """The encryption key is missing, malformed, or does not open the stored secrets."""

    kind = "secret_key"


# --- errors from the platform --------------------------------------------------------------------


class ApiError(ProvisionError):
    """An error answer (or no answer) from the Cloud Elements platform or the provider."""

    kind = "api"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider_message: str | None = None,
        request_id: str | None = None,
        endpoint: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.provider_message = provider_message
        self.request_id = request_id
        self.endpoint = endpoint

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.insert(0, f"HTTP {self.status}")
        if self.endpoint:
            parts.insert(0, self.endpoint)
        if self.provider_message:
            parts.append(f"provider: {self.provider_message}")
        if self.request_id:
            parts.append(f"requestId {self.request_id}")
        text = " - ".join(parts)
        return f"{text} (hint: {self.hint})" if self.hint else text

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "status": self.status,
            "provider_message": self.provider_message,
            "request_id": self.request_id,
            "endpoint": self.endpoint,
        }


class TransientApiError(ApiError):
    """Worth retrying: the same request may succeed later."""

    transient = True
    retry_after: float | None = None


class ServiceUnavailableError(TransientApiError):
    """HTTP 500/502/503/504, or an error body that is not JSON from a gateway."""

    kind = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimitedError(TransientApiError):
    """HTTP 429; ``retry_after`` (seconds) comes from the Retry-After header when given."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ApiTimeoutError(TransientApiError):
    """No complete answer within the client's timeout (connect or read)."""

    kind = "timeout"


class ApiConnectionError(TransientApiError):
    """The platform could not be reached (refused, reset, DNS)."""

    kind = "connection"


class MalformedResponseError(TransientApiError):
    """A success status whose body is not the JSON shape the API documents."""

    kind = "malformed_response"


class PermanentApiError(ApiError):
    """Retrying the same request cannot help; the attempt fails with the platform's words."""


class BadRequestError(PermanentApiError):
    """HTTP 400 from the platform (missing or invalid parameters)."""

    kind = "bad_request"


class AuthenticationError(PermanentApiError):
    """HTTP 401: the User/Organization secrets (or an element token) were rejected."""

    kind = "unauthorized"


class ForbiddenError(PermanentApiError):
    """HTTP 403 from the provider, or a disabled instance."""

    kind = "forbidden"


class NotFoundApiError(PermanentApiError):
    """HTTP 404: unknown element key or instance id."""

    kind = "not_found"


class ConflictError(PermanentApiError):
    """HTTP 409 and other conflicts the platform reports."""

    kind = "conflict"


class InvalidDatabaseError(BadRequestError):
    """Intuit's ``invalid_database``: development keys used with a production company."""

    kind = "invalid_database"


class ProviderRejectedError(BadRequestError):
    """The provider rejected the OAuth material (bad, expired or reused code / verifier / token)."""

    kind = "provider_rejected"


class SchemaOutdatedError(ProvisionError):
    """The database is not at the newest migration."""

    kind = "schema_outdated"
