"""An application that embeds the engine, run as its own process by ``test_embedder_logging.py``.

It configures its own DEBUG logging first (``logging.basicConfig`` on stderr), then opens the
engine with ``open_engine`` and runs an OAuth1 and an OAuth2 flow against the sandbox named in
``ELEMENTS_BASE_URL``. After ``open_engine`` it adds a second root handler of its own (on stdout),
so both orders of "configure logging" and "open the engine" are exercised.
"""
from __future__ import annotations

import logging
import sys

from testkit import consent

LAYOUT = "%(name)s | %(message)s"


def main(db_url: str, api_secret: str) -> int:
    """Run both redirect flows to PROVISIONED; prints ``embedder: done`` on stdout."""
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format=LAYOUT)
    from engine import open_engine  # noqa: PLC0415 - imported after logging is set up, as embedders do

    engine = open_engine(db_url, sleep=lambda seconds: None)
    late = logging.StreamHandler(sys.stdout)
    late.setFormatter(logging.Formatter(LAYOUT))
    logging.getLogger().addHandler(late)
    try:
        for flow in ("oauth1", "oauth2"):
            attempt = engine.start("quickbooks", f"embedded {flow}", flow=flow, api_key="dev-consumer-key",
                                   api_secret=api_secret, callback_url="https://app.example.com/cb",
                                   config={"use_sandbox": "true"})  # development keys: a sandbox company
            engine.run_until_idle()
            location = consent(engine.redirect_url(engine.get(attempt.id)) or "")
            assert engine.handle_callback(location).status == "applied"
            engine.run_until_idle()
            state = engine.get(attempt.id).state.value
            assert state == "PROVISIONED", state
    finally:
        engine.close()
    logging.getLogger().removeHandler(late)
    print("embedder: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
