"""Settings and where they come from; ``engine.config.environment`` is the ONLY module that reads
``os.environ``, and every other module here receives an ``environ`` mapping (None: the process's).

Every tunable of the engine is a frozen dataclass (``EngineSettings``, ``ClientSettings``,
``RetryPolicy``, ``RenewalPolicy``...), and each ``*_from_env`` function builds one from the
``PROVISION_*`` / ``ELEMENTS_*`` variables. One module per area: ``bounds`` (the range of every
numeric variable), ``checks`` (printable text, URLs), ``client``, ``engine_settings``, ``policies``,
``database``, ``webhooks``, ``serve`` (listener, console, branding), ``worker_metrics``, ``keys``
and ``retention``. Everything is re-exported here: import from ``engine.config``.
"""
from engine.config.bounds import BOUNDS, Bound
from engine.config.checks import BIDI_CHARS, MAX_URL, PRINTABLE_RE, check_url
from engine.config.client import (
    BASE_PATH,
    DEFAULT_BASE_URL,
    SANDBOX_HOST,
    SANDBOX_ORG_SECRET,
    SANDBOX_PORT,
    SANDBOX_USER_SECRET,
    ClientSettings,
    client_settings_from_env,
)
from engine.config.database import (
    DatabaseSettings,
    database_settings_from_env,
    db_url_from_env,
    open_database,
)
from engine.config.engine_settings import EngineSettings, engine_settings_from_env
from engine.config.environment import environ_copy
from engine.config.keys import ENV_KEY, secret_keys_from_env
from engine.config.policies import RenewalPolicy, RetryPolicy, retry_policy_from_env
from engine.config.retention import RETENTION_ENV, history_retention_days_from_env
from engine.config.serve import (
    Branding,
    ConsoleSettings,
    ServeSettings,
    branding_from_env,
    callback_page_key_from_env,
    console_settings_from_env,
    serve_settings_from_env,
)
from engine.config.webhooks import (
    WEBHOOK_SECRET_PREFIX,
    WebhookSettings,
    check_webhook_secret,
    webhook_settings_from_env,
)
from engine.config.worker_metrics import WorkerMetricsSettings, worker_metrics_settings_from_env

__all__ = [
    "BASE_PATH",
    "BIDI_CHARS",
    "BOUNDS",
    "Bound",
    "Branding",
    "ClientSettings",
    "ConsoleSettings",
    "DEFAULT_BASE_URL",
    "DatabaseSettings",
    "ENV_KEY",
    "EngineSettings",
    "MAX_URL",
    "PRINTABLE_RE",
    "RETENTION_ENV",
    "RenewalPolicy",
    "RetryPolicy",
    "SANDBOX_HOST",
    "SANDBOX_ORG_SECRET",
    "SANDBOX_PORT",
    "SANDBOX_USER_SECRET",
    "ServeSettings",
    "WEBHOOK_SECRET_PREFIX",
    "WebhookSettings",
    "WorkerMetricsSettings",
    "branding_from_env",
    "callback_page_key_from_env",
    "check_url",
    "check_webhook_secret",
    "client_settings_from_env",
    "console_settings_from_env",
    "database_settings_from_env",
    "db_url_from_env",
    "engine_settings_from_env",
    "environ_copy",
    "history_retention_days_from_env",
    "open_database",
    "retry_policy_from_env",
    "secret_keys_from_env",
    "serve_settings_from_env",
    "webhook_settings_from_env",
    "worker_metrics_settings_from_env",
]
