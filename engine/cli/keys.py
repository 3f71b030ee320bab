"""``provision keys rotate``: the command around ``engine.security.rotation``."""
from __future__ import annotations

from collections.abc import Callable

from engine.cli import progress
from engine.cli.output import to_json
from engine.config import ENV_KEY, db_url_from_env
from engine.security.rotation import RotationReport, rotate_keys


def format_report(report: RotationReport) -> str:
    """The human summary printed by the CLI."""
    lines = [f"re-encrypted {report.attempts} attempt secret blob(s) and {report.callbacks} callback "
             f"param blob(s); {report.already_current} already under the new key"]
    if report.released:
        lines.append(f"{report.released} quarantined attempt(s) the new keys open were made due again")
    if report.unreadable:
        lines.append(f"{report.unreadable} row(s) cannot be decrypted with any configured key and were left "
                     "untouched; the old key(s) are still needed")
    elif report.mode == "env":
        lines.append(f"done: you may now drop the old key(s) from {ENV_KEY} (keep only the first), "
                     "then restart workers and `provision serve`")
    elif report.retired:
        lines.append(f"done: {report.key_file} now holds only the new key {report.key_id}; "
                     f"{report.workers} live worker(s) write with it and reload the file by themselves")
    else:
        lines.append(f"not finished: a worker started with the old key meanwhile, so {report.key_file} keeps "
                     "NEW,OLD; run `provision keys rotate` again")
    return "\n".join(lines)


def run_rotate(db_url: str | None, *, batch: int, as_json: bool, out: Callable[[str], None],
               quiet: bool = False) -> int:
    """The body of ``provision keys rotate``: rotate, print counts; exit 1 while rows stay unreadable.

    On a terminal a spinner runs meanwhile (the number of rows is not known up front).
    """
    with progress.bar("re-encrypting secrets", None, enabled=progress.wanted(as_json=as_json, quiet=quiet)):
        report = rotate_keys(db_url or db_url_from_env(), batch=batch)
    out(to_json(report.as_dict()) if as_json else format_report(report))
    return 0 if report.complete and (report.mode == "env" or report.retired) else 1
