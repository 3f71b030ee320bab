"""The CLI's logging: the one place in the project that calls ``logging.basicConfig``."""
from __future__ import annotations

import logging
import sys

from engine.security.redaction import install as install_log_redaction


def configure_logging(verbose: int) -> None:
    """stderr at WARNING (``-v`` INFO, ``-vv`` DEBUG), every record redacted."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    layout = "%(levelname)s %(name)s: %(message)s"
    if verbose > 0:
        layout = "%(asctime)s " + layout
    logging.basicConfig(level=level, stream=sys.stderr, format=layout)
    # urllib3's DEBUG lines (-vv) carry request URLs, and GET /oauth/token has apiSecret in its
    # query: they are shown, because the filter installed below masks every secret value in them.
    logging.getLogger("urllib3").setLevel(level)
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING if verbose < 2 else logging.INFO))
    # After basicConfig, so that its stderr handler carries the filter too.
    install_log_redaction()
