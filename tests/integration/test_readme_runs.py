"""Every code block of README.md runs as written (issue 18 item 7), or says why it cannot.

Each block is preceded by an HTML comment ``<!-- readme-test: KIND ... -->``:
``python`` (run in a subprocess, in a fresh folder, against a sandbox), ``python continues`` (appended
to the python block before it, same process), ``shell`` (its ``provision`` lines run against a
sandbox and a temporary database), ``json`` (parsed), ``run by <test file>`` (that file must exist
and read README.md), ``skip (...)`` or ``not code (...)`` (with a reason). A block without a
marker fails the test, so a new README example cannot go untested by accident.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from sandbox import Sandbox, start

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
KINDS = ("python continues", "python", "shell", "json", "run by", "skip", "not code")
MARKER = re.compile(rf"<!-- readme-test: (?P<kind>{'|'.join(KINDS)})"
                    r"(?: \((?P<why>[^)]*)\)|(?P<rest> [^>]*))? -->")


@dataclass(frozen=True)
class Block:
    """One code block of the README: its marker kind, the text after the kind, its code and line."""

    kind: str
    detail: str
    code: str
    line: int


def readme_blocks(text: str) -> list[Block]:
    """Fenced and indented code blocks, each with the marker on the non-blank line before it."""
    lines = text.split("\n")
    blocks: list[Block] = []
    n = 0
    while n < len(lines):
        line = lines[n]
        fenced = line.startswith("```")
        after = lines[n - 1].strip() if n else ""
        indented = (line.startswith("    ") and n > 0 and (not after or after.startswith("<!-- readme-test"))
                    and not _in_list(lines, n))
        if not (fenced or indented):
            n += 1
            continue
        start = n
        if fenced:
            end = next(i for i in range(n + 1, len(lines)) if lines[i].startswith("```"))
            code = "\n".join(lines[n + 1:end])
            n = end + 1
        else:
            end = n
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            code = "\n".join(line[4:] for line in lines[n:end]).strip("\n")
            n = end
        before = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        match = MARKER.fullmatch(before.strip())
        kind = match["kind"].strip() if match else ""
        detail = ((match["why"] or match["rest"] or "") if match else "").strip()
        blocks.append(Block(kind, detail, code, start + 1))
    return blocks


def _in_list(lines: list[str], n: int) -> bool:
    # An indented paragraph continuing a bullet ("- ...") is not a code block.
    for i in range(n - 1, -1, -1):
        if lines[i].strip():
            return lines[i].lstrip().startswith("- ") and not lines[i].startswith("<!--")
    return False


BLOCKS = readme_blocks(README.read_text())


def test_every_block_is_marked_and_says_why_when_it_does_not_run() -> None:
    unmarked = [b.line for b in BLOCKS if b.kind not in KINDS]
    assert not unmarked, f"README.md blocks without a readme-test marker at lines {unmarked}"
    assert all(b.detail for b in BLOCKS if b.kind in ("skip", "not code", "run by")), "a skip needs a reason"
    assert {b.kind for b in BLOCKS} >= {"python", "python continues", "shell", "json"}


def test_json_blocks_parse() -> None:
    for block in BLOCKS:
        if block.kind == "json":
            assert isinstance(json.loads(block.code), dict), block.line


def test_blocks_run_elsewhere_are_run_there() -> None:
    for block in BLOCKS:
        if block.kind == "run by":
            target = ROOT / block.detail.removeprefix("by ").strip()
            assert target.is_file() and "README.md" in target.read_text(), block.detail


@pytest.fixture()
def sandbox() -> Sandbox:  # type: ignore[misc]
    """A sandbox on a free loopback port (the README's examples talk to it)."""
    with start(port=0, seed=1) as running:
        yield running


def _env(sandbox: Sandbox) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "ELEMENTS_"))}
    env.update({"ELEMENTS_BASE_URL": sandbox.base_url, "PROVISION_SECRET_KEY": Fernet.generate_key().decode(),
                "PYTHONUNBUFFERED": "1"})
    return env


def python_programs() -> list[tuple[int, str]]:
    """(line, source) of each python block, with its ``python continues`` blocks appended."""
    programs: list[tuple[int, str]] = []
    for block in BLOCKS:
        if block.kind == "python":
            programs.append((block.line, block.code))
        elif block.kind == "python continues":
            line, code = programs[-1]
            programs[-1] = (line, code + "\n" + block.code)
    return programs


@pytest.mark.parametrize("line,source", python_programs(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_python_blocks_run_as_written(line: int, source: str, sandbox: Sandbox, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(source)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(sandbox), capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, f"README.md line {line}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert "consent URL: " + sandbox.root_url in done.stdout  # the API example reached REDIRECTED
    assert "rejected:" in done.stdout and "1 redirect NEW -> REDIRECTED" in done.stdout


def _shell_commands(code: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for raw in joined.splitlines():
        words = shlex.split(raw, comments=True)
        if words:
            commands.append(words)
    return commands


def test_shell_blocks_run_against_a_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("provision"))
    env = {**_env(sandbox), "PROVISION_DB_URL": f"sqlite:///{tmp_path / 'provision.db'}"}
    shells = [b for b in BLOCKS if b.kind == "shell"]
    assert shells
    for block in shells:
        attempt_id = consent_url = ""
        for words in _shell_commands(block.code):
            assert words[0] == "provision", (block.line, words)
            if words[1] == "sandbox":  # `provision sandbox &`: the test's own sandbox plays it
                assert words[-1] == "&"
                continue
            args = [w.replace("ID", attempt_id) if w == "ID" else w for w in words[1:]]
            if args[0] == "callback":  # the Location the consent page answered, as the user copies it
                answer = requests.post(consent_url, data={"decision": "approve", "company": "sandbox"},
                                       allow_redirects=False, timeout=10)
                args = ["callback", answer.headers["Location"]]
            done = subprocess.run([exe, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, f"README.md line {block.line}: {words}\n{done.stdout}{done.stderr}"
            if args[0] == "start":
                attempt_id = done.stdout.strip()
            if args[0] == "show" and "consent URL" in done.stdout:
                consent_url = done.stdout.split("consent URL", 1)[1].split()[0]
        final = subprocess.run([exe, "--json", "show", attempt_id], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=60)
        assert json.loads(final.stdout)["state"] == "PROVISIONED", final.stdout
