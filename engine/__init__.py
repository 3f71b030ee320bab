"""element-provisioner's engine: the ``Engine`` API, the Elements client, retries, callbacks, CLI."""
from .callbacks import CallbackOutcome
from .client import ClientSettings, ElementsClient
from .clock import FakeClock, utcnow
from .engine import Engine, EngineSettings, TickReport
from .errors import (
    ApiError,
    AttemptNotFoundError,
    CallbackRejectedError,
    InvalidInputError,
    MissingConfigurationError,
    ProvisionError,
)
from .factory import open_engine
from .retry import RetryPolicy

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
