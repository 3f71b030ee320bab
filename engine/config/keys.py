"""Where the Fernet key(s) that encrypt secrets at rest come from: ``PROVISION_SECRET_KEY``."""
from __future__ import annotations

from collections.abc import Mapping

from engine.config.environment import environment

#: The environment variable that holds the Fernet key(s), newest first.
ENV_KEY = "PROVISION_SECRET_KEY"


def secret_keys_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The Fernet key list in ``PROVISION_SECRET_KEY`` (newest first), or None."""
    env = environment(environ)
    return env.get(ENV_KEY) or None
