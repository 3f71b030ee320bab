"""One real-browser check: headless Chromium screenshots the console's ``/attempts/<id>`` served over
HTTP, and the picture must contain the rendered diagram (the pixel colours only the inline SVG uses)."""
from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from engine.config import ConsoleSettings
from engine.core.facade import Engine
from engine.web.console import make_console
from states.attempt import Attempt

Png = tuple[int, int, int, list[bytes]]
PROVISIONED_FILL = (0xBB, 0xF7, 0xD0)  # engine.inspection.render: PROVISIONED node fill
PATH_BLUE = (0x1D, 0x4E, 0xD8)  # engine.inspection.render: edges the attempt took


@pytest.fixture
def server(engine: Engine) -> Iterator[BaseWSGIServer]:
    """The console (loopback mode) on 127.0.0.1, port chosen by the OS, served from a background thread."""
    srv = make_server("127.0.0.1", 0, make_console(engine, ConsoleSettings()), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, name="console", daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    thread.join(timeout=10)
    srv.server_close()


def screenshot(chromium: str, url: str, out: Path) -> bytes:
    profile = out.with_suffix(".profile")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--screenshot={out}",
           "--window-size=1280,900", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0 and out.exists(), f"chromium exit {done.returncode}: {done.stderr[-1500:]}"
    return out.read_bytes()


def count_near(png: Png, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    """Pixels within ``tolerance`` of ``colour`` on every channel (anti-aliasing blurs edges only)."""
    width, _, bpp, rows = png
    seen = Counter(row[x:x + 3] for row in rows for x in range(0, width * bpp, bpp))
    return sum(n for rgb, n in seen.items() if all(abs(rgb[c] - colour[c]) <= tolerance for c in range(3)))


@pytest.mark.slow
def test_browser_shows_the_attempt_diagram(
        need_dot: str, need_chromium: str, server: BaseWSGIServer, start_quick: Callable[..., Attempt],
        walk: Callable[[str, Sequence[tuple[str, str, str, float, dict[str, Any]]]], Attempt],
        decode_png: Callable[[bytes], Png], tmp_path: Path) -> None:
    attempt = start_quick("Browser Ltd")
    walk(attempt.id, [("quick_provision", "NEW", "PROVISIONED", 2, {}),
                      ("renew", "PROVISIONED", "PROVISIONED", 3600, {})])
    base = f"http://127.0.0.1:{server.server_port}/attempts"

    page = decode_png(screenshot(need_chromium, f"{base}/{attempt.id}", tmp_path / "attempt.png"))
    # Control: a page of the same app without a diagram (the 404 page) has none of these colours.
    control = decode_png(screenshot(need_chromium, f"{base}/{'0' * 8}-0000-4000-8000-{'0' * 12}",
                                    tmp_path / "missing.png"))

    assert page[:2] == (1280, 900)
    green, blue = count_near(page, PROVISIONED_FILL), count_near(page, PATH_BLUE)
    # The diagram shares the screen with the facts column (about 790 of 1280 px wide), so its node
    # fill covers about 600 px since the machine gained the disconnect states (issue 10/12); the
    # control page has none at all.
    assert green > 400, f"the PROVISIONED node is not drawn ({green} px of its fill)"
    # The path's blue line is thinner since the machine is wider (DISCONNECTING, DISCONNECTED).
    assert blue > 35, f"the taken path is not drawn ({blue} px of its colour)"
    assert count_near(control, PROVISIONED_FILL) == 0 and count_near(control, PATH_BLUE) < 20
