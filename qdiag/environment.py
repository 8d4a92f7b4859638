"""Where the command line reads and writes: one object, injectable.

The CLI and every command write through an `Environment` (streams, whether each
is a terminal, the process environment variables, the working directory,
terminal size), never through `sys.stdout` or `os.environ` directly.  Tests
build one with in-memory streams and run the CLI in-process, so they never
touch the real terminal, home directory or current directory.

Conventions decided here, once:
- colour: `NO_COLOR` (set, not empty) turns it off; otherwise `FORCE_COLOR`
  (set, not empty, not "0") turns it on even off a terminal; otherwise colour
  only when the output is a terminal whose TERM is not "dumb".
- plain ASCII (no box drawing, block bars or dashes outside ASCII) whenever the
  output is not a terminal, or with --ascii.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Mapping, TextIO

# Width used when the output is not a terminal (files, pipes): wide enough for
# the tables, narrow enough for a ticket.
FILE_WIDTH = 100


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _binary(stream) -> BinaryIO | None:
    return getattr(stream, "buffer", None)


@dataclass
class Environment:
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin_isatty: bool | None = None  # None: ask the stream
    stdout_isatty: bool | None = None
    stderr_isatty: bool | None = None
    vars: Mapping[str, str] = field(default_factory=lambda: os.environ)
    cwd: Path | None = None  # None: the process's working directory when asked
    columns: int | None = None  # None: the terminal's (or FILE_WIDTH off a terminal)
    rows: int | None = None
    ascii_only: bool = False  # --ascii
    pager: bool = True  # page long text on a terminal (--no-pager turns it off)

    def __post_init__(self) -> None:
        if self.stdin_isatty is None:
            self.stdin_isatty = _isatty(self.stdin)
        if self.stdout_isatty is None:
            self.stdout_isatty = _isatty(self.stdout)
        if self.stderr_isatty is None:
            self.stderr_isatty = _isatty(self.stderr)

    # --- streams -----------------------------------------------------------------------
    @property
    def working_dir(self) -> Path:
        return self.cwd if self.cwd is not None else Path.cwd()

    @property
    def stdout_bytes(self) -> BinaryIO | None:
        """The binary side of stdout (for gzip snapshots), None when there is none."""
        return _binary(self.stdout)

    @property
    def stdin_bytes(self) -> BinaryIO:
        raw = _binary(self.stdin)
        return raw if raw is not None else io.BytesIO(self.stdin.read().encode("utf-8", "surrogateescape"))

    # --- presentation --------------------------------------------------------------------
    def _flag(self, name: str) -> str:
        return (self.vars.get(name) or "").strip()

    def color(self, to_terminal: bool | None = None) -> bool:
        """Whether to colour output going to stdout (or, with to_terminal, to a stream that is or is not one)."""
        terminal = self.stdout_isatty if to_terminal is None else to_terminal
        if self._flag("NO_COLOR"):
            return False
        force = self._flag("FORCE_COLOR")
        if force and force.lower() not in ("0", "false", "no"):
            return True
        return bool(terminal) and self._flag("TERM").lower() != "dumb"

    def unicode(self, to_terminal: bool | None = None) -> bool:
        """Box drawing, bars and typographic dashes only on a UTF-8 terminal, and not with --ascii."""
        terminal = self.stdout_isatty if to_terminal is None else to_terminal
        encoding = (getattr(self.stdout, "encoding", None) or "").lower().replace("-", "")
        return bool(terminal) and not self.ascii_only and encoding == "utf8"

    def width(self, to_terminal: bool | None = None) -> int:
        terminal = self.stdout_isatty if to_terminal is None else to_terminal
        if self.columns:
            return self.columns
        columns = self._flag("COLUMNS")
        if columns.isdigit() and int(columns) > 0:
            return int(columns)
        if terminal:
            return shutil.get_terminal_size((80, 24)).columns
        return FILE_WIDTH

    def height(self) -> int:
        if self.rows:
            return self.rows
        lines = self._flag("LINES")
        if lines.isdigit() and int(lines) > 0:
            return int(lines)
        return shutil.get_terminal_size((80, 24)).lines
