"""A report, rendered in the chosen format, to stdout or a file."""

from __future__ import annotations

from enum import Enum

from qdiag import outputs
from qdiag.environment import Environment
from qdiag.errors import UsageError
from qdiag.report import render


class ReportFormat(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


def emit_report(env: Environment, report: dict, fmt: ReportFormat | str, output: str | None) -> None:
    try:
        fmt = ReportFormat(fmt)
    except ValueError:
        raise UsageError(f"--format {fmt!r} is not known", "use text, json or markdown") from None
    if fmt is ReportFormat.json:
        text = render.render_json(report)
    elif fmt is ReportFormat.markdown:
        text = render.render_markdown(report)
    else:
        to_terminal = outputs.is_stdout(output) and bool(env.stdout_isatty)
        text = render.render_text(report, color=env.color(to_terminal), unicode=env.unicode(to_terminal),
                                  width=env.width(to_terminal))
    outputs.write_text(env, output, text)
