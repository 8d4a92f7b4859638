"""Where a key stands in a TOML file's text, for errors that name `file:line`.

tomllib returns values, not positions; the line is found again in the text:
the first line that assigns the key (`key =`, `"key" =`) or opens a table
naming it (`[key]`, `[probes.key]`, `[[key]]`), from a given line on.
"""

from __future__ import annotations

import re


def key_line(text: str, key: str, start: int = 1, *, within_table: bool = False) -> int | None:
    """The 1-based line of `key` at or after line `start`; with within_table, only up to the
    next table header after `start` (the key of one [[rules]] entry)."""
    assign = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    header = re.compile(rf"^\s*\[+[^\]]*(?<![\w-]){re.escape(key)}[\"']?\s*\]")
    lines = text.splitlines()
    for number in range(max(1, start), len(lines) + 1):
        line = lines[number - 1]
        if within_table and number > start and re.match(r"^\s*\[", line):
            return None
        if assign.search(line) or (not within_table and header.search(line)):
            return number
    return None
