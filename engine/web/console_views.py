"""HTML building blocks of the operator console: layout, tables, forms, the stylesheet and script.

Everything is a ``markupsafe.Markup`` built with ``Markup(...).format(...)``, which escapes every
argument that is not already markup: values from the database can never become HTML. The pages work
without JavaScript; ``CONSOLE_JS`` only adds the live refresh (a fetch of the same URL every few
seconds that swaps the ``#live`` region, off by a checkbox that is remembered in localStorage) and
the copy-to-clipboard button of a value shown once (the connect link).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from engine.inspection.render import GraphvizMissingError, render_attempt
from states.attempt import Attempt, HistoryEntry

REFRESH_MS = 5000
SECURITY_HEADERS = {
    # Scripts and styles only from this console; inline SVG needs no style; fetch only to itself.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on form POSTs,
    # which the CSRF check (console_auth.csrf_ok) must refuse; other sites still learn nothing.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
CONSOLE_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header.top{display:flex;gap:1rem;align-items:center;padding:.6rem 1.5rem;background:#111827;color:#fff}
header.top a{color:#fff}header.top .who{margin-left:auto}
header.top form{display:inline}main{padding:1rem 1.5rem}
.banner{background:#fef3c7;color:#78350f;padding:.5rem 1.5rem;border-bottom:1px solid #f59e0b;font-weight:600}
h1{font-size:1.35rem;margin:.3rem 0 .8rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;font-size:.875rem;background:#fff}
td,th{border:1px solid #d1d5db;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f3f4f6}caption{text-align:left;font-weight:600;padding:.3rem 0}
.PROVISIONED{color:#15803d;font-weight:bold}.FAILED{color:#b91c1c;font-weight:bold}
.retrying{color:#b45309;font-weight:bold}
.cards{display:flex;flex-wrap:wrap;gap:.5rem;margin:.5rem 0}
.cards a{display:block;padding:.45rem .8rem;border:1px solid #d1d5db;border-radius:6px;background:#fff;
 color:#111827;text-decoration:none}.cards a:focus,.cards a:hover{border-color:#1d4ed8}
.cards b{display:block;font-size:1.2rem}.attention a{border-color:#f59e0b}
form.filters{display:flex;flex-wrap:wrap;gap:.6rem;align-items:end;background:#fff;padding:.6rem;
 border:1px solid #d1d5db;border-radius:6px}
form.filters .field{display:flex;flex-direction:column;font-size:.8rem;gap:.15rem}
input,select,button{font:inherit;padding:.3rem .45rem}
button,.button{background:#1d4ed8;color:#fff;border:0;border-radius:5px;cursor:pointer;padding:.4rem .8rem;
 text-decoration:none;display:inline-block}
button.danger,.button.danger{background:#b91c1c}.button.secondary{background:#6b7280}
:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.diagram svg{max-width:100%;height:auto}.hint{color:#4b5563}.error{color:#b91c1c}
pre{background:#fff;border:1px solid #d1d5db;padding:.6rem;overflow:auto}
.actions{display:flex;gap:.5rem;flex-wrap:wrap;margin:.5rem 0}.pager{margin:.8rem 0;display:flex;gap:1rem}
.overview{display:grid;grid-template-columns:minmax(16rem,26rem) minmax(0,1fr);gap:1.5rem;align-items:start}
@media (max-width:900px){.overview{grid-template-columns:1fr}}
.skip{position:absolute;left:-999px}.skip:focus{left:.5rem;top:.5rem;background:#fff;color:#000;padding:.3rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;background:#fff;padding:.6rem;
 border:1px solid #d1d5db;border-radius:6px}dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.reveal{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
.reveal input{font-family:monospace;max-width:100%}
"""
CONSOLE_JS = """
(function () {
  var box = document.getElementById('live-toggle');
  if (!box) { return; }
  var key = 'provision-console-live';
  box.checked = localStorage.getItem(key) !== 'off';
  box.addEventListener('change', function () { localStorage.setItem(key, box.checked ? 'on' : 'off'); });
  setInterval(function () {
    if (!box.checked || document.hidden) { return; }
    fetch(location.href, {credentials: 'same-origin', headers: {'X-Console-Refresh': '1'}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('live');
        var here = document.getElementById('live');
        if (fresh && here) { here.replaceWith(fresh); }
      })
      .catch(function () {});
  }, REFRESH_MS);
})();
(function () {
  // "Copy to clipboard" next to a value shown once (the connect link): the Clipboard API, else the
  // selection and execCommand for older browsers; the status line says which happened.
  document.querySelectorAll('button[data-copy]').forEach(function (button) {
    button.addEventListener('click', function () {
      var field = document.getElementById(button.getAttribute('data-copy'));
      var status = document.getElementById('copy-status');
      var say = function (text) { if (status) { status.textContent = text; } };
      field.select();
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(field.value).then(function () { say('Copied.'); },
          function () { say(document.execCommand('copy') ? 'Copied.' : 'Select the link and copy it.'); });
      } else {
        say(document.execCommand('copy') ? 'Copied.' : 'Select the link and copy it.');
      }
    });
  });
})();
""".replace("REFRESH_MS", str(REFRESH_MS))


def when(at: datetime | None) -> str:
    """ISO 8601 UTC, to the second (one format everywhere)."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at is not None else ""


def state_badge(state: object, retrying: bool = False) -> Markup:
    """The state, coloured (retrying attempts are marked as such)."""
    if retrying:
        return Markup('<span class="retrying">{} (retrying)</span>').format(state)
    return Markup('<span class="{}">{}</span>').format(state, state)


def link(href: str, text: object, **params: str) -> Markup:
    """An anchor; ``params`` become the query string."""
    query = urlencode({k: v for k, v in params.items() if v})
    return Markup('<a href="{}">{}</a>').format(f"{href}?{query}" if query else href, text)


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "", caption: str = "") -> Markup:
    """A table with a header row (``scope="col"``) and an optional caption."""
    ths = Markup("").join(Markup('<th scope="col">{}</th>').format(h) for h in head)
    body = Markup("").join(
        Markup("<tr>{}</tr>").format(Markup("").join(Markup("<td>{}</td>").format(c) for c in row))
        for row in rows)
    cap = Markup("<caption>{}</caption>").format(caption) if caption else Markup("")
    return Markup('<table class="{}">{}<thead><tr>{}</tr></thead><tbody>{}</tbody></table>').format(
        cls, cap, ths, body)


def facts(items: Iterable[tuple[str, Any]]) -> Markup:
    """A definition list of label/value pairs."""
    return Markup('<dl class="facts">{}</dl>').format(Markup("").join(
        Markup("<dt>{}</dt><dd>{}</dd>").format(k, v) for k, v in items))


def hidden(fields: Mapping[str, str]) -> Markup:
    """Hidden inputs carrying ``fields``."""
    return Markup("").join(Markup('<input type="hidden" name="{}" value="{}">').format(k, v)
                           for k, v in fields.items())


def select(name: str, label: str, options: Iterable[tuple[str, str]], current: str) -> Markup:
    """A labelled ``<select>``."""
    opts = Markup("").join(
        Markup('<option value="{}"{}>{}</option>').format(v, Markup(" selected") if v == current else "", t)
        for v, t in options)
    return Markup('<span class="field"><label for="f-{}">{}</label><select name="{}" id="f-{}">{}</select>'
                  "</span>").format(name, label, name, name, opts)


def text_input(name: str, label: str, value: str, placeholder: str = "") -> Markup:
    """A labelled text ``<input>``."""
    return Markup('<span class="field"><label for="f-{}">{}</label><input type="search" name="{}" id="f-{}" '
                  'value="{}" placeholder="{}" maxlength="80"></span>').format(
        name, label, name, name, value, placeholder)


def layout(title: str, body: Markup, *, operator: str | None, csrf: str | None, banner: str | None,
           root: str = "") -> str:
    """A whole console page: top bar (who is signed in, logout), optional banner, then ``body``."""
    who = Markup("")
    if operator is not None:
        logout = Markup("")
        if csrf is not None:
            logout = Markup('<form method="post" action="{}/logout">{}<button type="submit">Log out</button>'
                            "</form>").format(root, hidden({"csrf": csrf}))
        who = Markup('<span class="who">signed in as <b>{}</b></span>{}').format(operator, logout)
    top = Markup('<header class="top"><a href="{}/">element-provisioner console</a>'
                 '<a href="{}/?view=attention">needs attention</a>{}</header>').format(root or "", root, who)
    note = Markup('<div class="banner" role="note">{}</div>').format(banner) if banner else Markup("")
    return str(Markup(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>{} - provision console'
        '</title><link rel="stylesheet" href="{}/static/console.css"></head><body>'
        '<a class="skip" href="#content">Skip to content</a>{}{}<main id="content">{}</main>'
        '<script src="{}/static/console.js"></script></body></html>'
    ).format(title, root, top, note, body, root))


def inline_svg(svg: str) -> Markup:
    """Graphviz SVG ready to embed in HTML: the XML prolog and DOCTYPE only belong in a file.

    Safe to mark up: Graphviz escapes every label it writes, and labels were cleaned before that.
    """
    start = svg.find("<svg")
    return Markup(svg[start:] if start >= 0 else "")


def diagram(attempt: Attempt, history: Sequence[HistoryEntry]) -> Markup:
    """The attempt's path: inline SVG with Graphviz's ``dot``, else the Mermaid source."""
    if shutil.which("dot") is not None:
        try:
            return inline_svg(str(render_attempt(attempt, history, "svg")))
        except GraphvizMissingError:
            pass  # removed between the check and the call: fall back like when it is absent
    return Markup('<p class="hint">Graphviz (<code>dot</code>) is not installed, so here is the Mermaid '
                  "source (install graphviz for a picture).</p><pre>{}</pre>").format(
        render_attempt(attempt, history, "mermaid"))
