"""Run the CLI in-process against a fake environment and read what a user
would see: stdout, stderr, the exit status, and JSON.  Nothing reaches the real
terminal; variables come from os.environ as the autouse fixture in
tests/conftest.py left it (no user config, no QDIAG_*), plus `vars`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qdiag.cli import main
from qdiag.environment import Environment


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    out_bytes: bytes = b""

    def json(self):
        return json.loads(self.out)


def fake_environment(*, stdin: bytes | str = b"", tty: bool = False, vars: dict | None = None,
                     columns: int | None = None, rows: int | None = None) -> Environment:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return Environment(
        stdin=io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"),
        stdout=io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True),
        stderr=io.StringIO(),
        stdin_isatty=False, stdout_isatty=tty, stderr_isatty=False,
        vars={**os.environ, **(vars or {})}, cwd=Path.cwd(), columns=columns, rows=rows,
        pager=False,
    )


def run_cli(*args, stdin: bytes | str = b"", tty: bool = False, vars: dict | None = None,
            columns: int | None = None, rows: int | None = None) -> CliResult:
    env = fake_environment(stdin=stdin, tty=tty, vars=vars, columns=columns, rows=rows)
    code = main([str(a) for a in args], env)
    env.stdout.flush()
    raw = env.stdout.buffer.getvalue()
    return CliResult(code, raw.decode("utf-8", "replace"), env.stderr.getvalue(), raw)


def run_qdiag_process(*args, timeout: float = 120, env: dict | None = None,
                      **kwargs) -> subprocess.CompletedProcess:
    """`python -m qdiag ARGS` in a real process (the code of this checkout; see tests/conftest.py)."""
    return subprocess.run([sys.executable, "-m", "qdiag", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kwargs)
