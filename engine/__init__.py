"""element-provisioner's engine: the ``Engine`` API, the Elements client, retries, callbacks, CLI."""
from engine.clients.elements import ElementsClient
from engine.clock import FakeClock, utcnow
from engine.config import ClientSettings, EngineSettings, RetryPolicy, WebhookSettings
from engine.core.callbacks import CallbackOutcome
from engine.core.events import EVENT_TYPES, Event, EventPage
from engine.core.facade import Engine, TickReport
from engine.errors import (
    ApiError,
    AttemptNotFoundError,
    CallbackRejectedError,
    InvalidInputError,
    MissingConfigurationError,
    ProvisionError,
)
from engine.wiring import open_engine

__all__ = [
    "ApiError",
    "AttemptNotFoundError",
    "CallbackOutcome",
    "CallbackRejectedError",
    "ClientSettings",
    "ElementsClient",
    "EVENT_TYPES",
    "Engine",
    "EngineSettings",
    "Event",
    "EventPage",
    "FakeClock",
    "InvalidInputError",
    "MissingConfigurationError",
    "ProvisionError",
    "RetryPolicy",
    "TickReport",
    "WebhookSettings",
    "open_engine",
    "utcnow",
]
