"""element-provisioner's engine: the ``Engine`` API, the Elements client, retries, callbacks, CLI."""
from engine.clients.elements import ElementsClient
from engine.clock import FakeClock, utcnow
from engine.config import ClientSettings, EngineSettings, RetryPolicy
from engine.core.callbacks import CallbackOutcome
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
    "Engine",
    "EngineSettings",
    "FakeClock",
    "InvalidInputError",
    "MissingConfigurationError",
    "ProvisionError",
    "RetryPolicy",
    "TickReport",
    "open_engine",
    "utcnow",
]
