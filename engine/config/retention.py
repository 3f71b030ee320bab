"""How long history is kept row by row: ``PROVISION_HISTORY_RETENTION_DAYS``."""
from __future__ import annotations

import re
from collections.abc import Mapping

from engine.config.environment import environment
from engine.errors import InvalidInputError

#: Days of history kept row by row; older renewal rows become daily summaries (persistence.retention).
RETENTION_ENV = "PROVISION_HISTORY_RETENTION_DAYS"


def history_retention_days_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``PROVISION_HISTORY_RETENTION_DAYS`` as a whole number of days; 0 (or unset) keeps everything."""
    env = environment(environ)
    raw = (env.get(RETENTION_ENV) or "").strip()
    if not raw:
        return 0
    if not re.fullmatch(r"[0-9]{1,5}", raw) or int(raw) > 36500:
        raise InvalidInputError(RETENTION_ENV, f"must be a whole number of days from 0 to 36500 "
                                               f"(0 keeps everything), got {raw[:30]!r}")
    return int(raw)
