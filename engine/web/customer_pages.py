"""The pages a customer's browser sees on the public receiver: plain words, branded, phone-sized.

Nothing internal reaches these pages: no state names, nonces, verifiers, attempt ids or error
kinds; only the app's name (``Branding``) and one of the fixed ``MESSAGES``. Embedders may pass
their own ``messages`` (same keys; ``{name}`` is replaced by the escaped app name) to reword them.

Every page is self-contained: one inline stylesheet allowed by its hash in the Content-Security-
Policy (no ``unsafe-inline``, no scripts at all), the logo (if any) the only remote resource. The
"Connecting..." page refreshes itself with ``<meta http-equiv="refresh">``, so it follows the
attempt without JavaScript.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from markupsafe import Markup, escape
from werkzeug.wrappers import Response

from engine.config import Branding

#: page kind -> (title, text); ``{name}`` in the text is the app's name.
MESSAGES: Mapping[str, tuple[str, str]] = {
    "connecting": ("Connecting...", "We are finishing the connection to {name}. This takes a few seconds; "
                   "this page updates by itself."),
    "connected": ("Connected", "Your account is now connected to {name}. You can close this window."),
    "denied": ("Not connected", "You chose not to give {name} access, so nothing was connected. You can "
               "start again from {name} at any time."),
    "failed": ("Connection failed", "We could not connect your account to {name}. Nothing was changed on "
               "your side. Please try again from {name}, or contact support if it keeps happening."),
    # A callback whose realmId another live attempt already connected (states.realm); only
    # QuickBooks callbacks carry a realmId, hence the word "company".
    "already_connected": ("Already connected", "This QuickBooks company is already connected to {name}, "
                          "so nothing new was connected and nothing was changed. If you expected a new "
                          "connection, please contact support."),
    "invalid": ("This link is no longer valid", "This link has already been used or has expired. Please go "
                "back to {name} and start the connection again."),
    "error": ("Something went wrong", "The connection could not be recorded. Please try again in a few "
              "minutes from {name}."),
    "open_in_browser": ("Connecting to {name}", "Open this link in a web browser to finish connecting."),
    "not_found": ("Page not found", "There is nothing at this address."),
    "method": ("Not allowed", "This address can only be opened in a web browser."),
    "too_large": ("Request too large", "This address can only be opened in a web browser."),
    "too_many": ("Please wait a moment", "Too many links that were not valid came from your network. "
                 "Please wait a minute, then go back to {name} and start the connection again."),
    "too_long": ("This link is no longer valid", "This link is too long to be one of ours. Please go back "
                 "to {name} and start the connection again."),
}
REFRESH_S = 2  # how often "Connecting..." looks again


@dataclass(frozen=True)
class PageStyle:
    """The stylesheet for a ``Branding`` and the CSP hash that allows exactly it."""

    css: str
    csp: str


_BASE_CSS = (
    "*{box-sizing:border-box}"
    "body{margin:0;background:var(--bg);color:#111827;font:16px/1.5 system-ui,-apple-system,"
    "'Segoe UI',Roboto,sans-serif}"
    "main{max-width:34rem;margin:12vh auto 2rem;padding:1.5rem 1.25rem;background:#fff;"
    "border-top:4px solid var(--brand);border-radius:10px;box-shadow:0 1px 6px #0002}"
    "header{display:flex;align-items:center;gap:.75rem;margin-bottom:.5rem;color:#4b5563}"
    "header img{max-height:40px;max-width:160px}"
    "h1{font-size:1.5rem;margin:.25rem 0 .75rem}"
    "p{margin:.5rem 0}a{color:var(--brand)}"
    ".support{margin-top:1.25rem;font-size:.95rem;color:#4b5563}"
    ".spinner{display:inline-block;width:1rem;height:1rem;margin-right:.5rem;border:3px solid #d1d5db;"
    "border-top-color:var(--brand);border-radius:50%;animation:spin 1s linear infinite;"
    "vertical-align:-2px}@keyframes spin{to{transform:rotate(360deg)}}"
    "@media (max-width:480px){main{margin:0;min-height:100vh;border-radius:0;box-shadow:none}"
    "h1{font-size:1.3rem}}"
)


def _style(branding: Branding) -> PageStyle:
    # Only validated hex colours (engine.config.branding_from_env) are placed in the CSS.
    css = f":root{{--brand:{branding.colour};--bg:{branding.background}}}" + _BASE_CSS
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    img = ""
    if branding.logo_url:
        parts = urlsplit(branding.logo_url)
        img = f"; img-src {parts.scheme}://{parts.netloc}"
    csp = (f"default-src 'none'; style-src 'sha256-{digest}'{img}; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    return PageStyle(css, csp)


class CustomerPages:
    """Renders the receiver's customer pages for one ``Branding``."""

    def __init__(self, branding: Branding | None = None,
                 messages: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.branding = branding or Branding()
        self.messages = {**MESSAGES, **(messages or {})}
        self._style = _style(self.branding)

    def _text(self, template: str) -> Markup:
        return Markup(escape(template)).replace("{name}", escape(self.branding.name))

    def page(self, kind: str, status: int = 200, *, refresh_url: str | None = None) -> Response:
        """The page ``kind`` (a ``MESSAGES`` key) as a response; ``refresh_url`` makes it poll."""
        title, text = self.messages[kind]
        b = self.branding
        logo = Markup('<img src="{}" alt="{} logo">').format(b.logo_url, b.name) if b.logo_url else Markup("")
        support = Markup("")
        if b.support_href:
            support = Markup('<p class="support">Need help? <a href="{}">Contact {} support</a>.</p>').format(
                b.support_href, b.name)
        refresh = Markup("")
        spinner = Markup("")
        if refresh_url is not None:
            refresh = Markup('<meta http-equiv="refresh" content="{}; url={}">').format(
                REFRESH_S, refresh_url)
            spinner = Markup('<span class="spinner" aria-hidden="true"></span>')
        html = Markup(
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}'
            "<title>{title} - {app}</title><style>{css}</style></head>"
            '<body><main><header>{logo}<span>{app}</span></header>'
            '<div role="status" aria-live="polite"><h1>{spinner}{title}</h1><p>{text}</p></div>{support}'
            "</main></body></html>\n"
        ).format(refresh=refresh, title=self._text(title), app=b.name, css=Markup(self._style.css), logo=logo,
                 spinner=spinner, text=self._text(text), support=support)
        response = Response(str(html), status=status, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = self._style.csp
        response.headers["Referrer-Policy"] = "no-referrer"  # callback URLs carry one-time codes
        response.headers["X-Frame-Options"] = "DENY"
        return response
