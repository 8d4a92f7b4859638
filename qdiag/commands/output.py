"""Rendering a report to stdout or a file, in the chosen format."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from qdiag.errors import UsageError
from qdiag.report import render
from qdiag.snapshot import write_atomic

FORMATS = ("text", "json", "markdown")


def emit_report(report: dict, fmt: str, output: str | None) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not known", "use text, json or markdown")
    if fmt == "json":
        text = render.render_json(report)
    elif fmt == "markdown":
        text = render.render_markdown(report)
    else:
        buffer = io.StringIO()
        to_terminal = output is None and sys.stdout.isatty()
        render.render_text(report, buffer, color=to_terminal)
        text = buffer.getvalue()
    if output and output != "-":
        write_atomic(Path(output), text.encode("utf-8"), mode=0o644)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
