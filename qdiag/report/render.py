"""Report renderers: text (rich, for terminals), markdown (for tickets), json."""

from __future__ import annotations

import json
from typing import Any, TextIO

SPARKS = "▁▂▃▄▅▆▇█"
VERDICT_STYLE = {"healthy": "bold green", "degraded": "bold yellow", "critical": "bold red", "unknown": "bold magenta"}
STATUS_STYLE = {"ok": "green", "error": "red", "timeout": "red", "skipped": "dim", "not_applicable": "dim"}


def sparkline(values: list | None) -> str:
    nums = [v for v in (values or []) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) < 2:
        return ""
    low, high = min(nums), max(nums)
    if high == low:
        return SPARKS[0] * len(nums)
    return "".join(SPARKS[int((v - low) / (high - low) * (len(SPARKS) - 1))] for v in nums)


def fmt_num(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text + unit


def fmt_fill(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value:.0%}"


def score_bar(score: float, width: int = 10) -> str:
    filled = int(round(score * width))
    return "█" * filled + "░" * (width - filled)


def queue_label(q: dict) -> str:
    return f"{q['name']} ({q['group']})" if q.get("group") else str(q["name"])


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


def render_markdown(report: dict) -> str:
    lines = [f"# qdiag report: {report['host']}", "",
             f"**Verdict: {report['verdict']}** · generated {report['generated_at']} · window {report['window_s']:g} s", ""]
    lines += ["## Possible root causes", ""]
    if not report["root_causes"]:
        lines += ["No root cause scored above the floor.", ""]
    for rank, cause in enumerate(report["root_causes"], 1):
        lines.append(f"### {rank}. `{cause['id']}` — {cause['subject']} (score {cause['score']:.2f}, step {cause['step']})")
        lines.append("")
        lines.append(cause["title"])
        lines.append("")
        lines.append("Evidence (measured):")
        lines += [f"- {e}" for e in cause["evidence"]]
        if cause["mitigations"]["immediate"]:
            lines += ["", "Do now:"] + [f"- {m}" for m in cause["mitigations"]["immediate"]]
        if cause["mitigations"]["long_term"]:
            lines += ["", "Later:"] + [f"- {m}" for m in cause["mitigations"]["long_term"]]
        if cause.get("next_commands"):
            lines += ["", "To confirm:"] + [f"- `{c}`" for c in cause["next_commands"]]
        lines.append("")
    lines += ["## Queues", ""]
    if report["queues"]:
        lines += ["| system | queue | depth | in/s | out/s | consumers | fill | status | trend |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for q in report["queues"]:
            lines.append(f"| {q['system']} | {queue_label(q)} | {fmt_num(q['depth'])} | {fmt_num(q['rate_in'])} | "
                         f"{fmt_num(q['rate_out'])} | {fmt_num(q['consumers'])} | {fmt_fill(q['fill_ratio'])} | "
                         f"{q['status'] or '—'} | {sparkline(q.get('depth_samples'))} |")
    else:
        lines.append("No queues observed.")
    lines += ["", "## The six steps", ""]
    for step in report["steps"]:
        lines.append(f"{step['number']}. **{step['name']}**")
        for finding in step["findings"]:
            lines.append(f"   - {finding['text']} (`{finding['cause']}`, {finding['subject']})")
        if not step["findings"]:
            lines.append(f"   - {step.get('note', 'nothing found')}")
    lines += ["", "## Probes", "", "| probe | status | seconds | error |", "| --- | --- | ---: | --- |"]
    for p in report["probes"]:
        lines.append(f"| {p['name']} | {p['status']} | {p['duration_s']:.2f} | {p['error'] or ''} |")
    return "\n".join(lines) + "\n"


def render_text(report: dict, *, color: bool, unicode: bool = True, width: int | None = None) -> str:
    import io

    out = io.StringIO()
    _render_text(report, out, color=color, width=width)
    return out.getvalue()


def _render_text(report: dict, out: TextIO, *, color: bool, width: int | None = None) -> None:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    def bullets(items, mark="•", style=""):
        # A grid keeps wrapped lines indented under their bullet.
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=len(mark) + 1, justify="right")
        grid.add_column(ratio=1)
        for item in items:
            grid.add_row(mark, Text(item, style=style))
        return grid

    console = Console(file=out, force_terminal=color, no_color=not color, width=width or (None if color else 100),
                      highlight=False, soft_wrap=False)
    verdict = report["verdict"]
    head = Text.assemble(("qdiag ", "bold"), (report["host"] or "", ""), "  verdict: ",
                         (verdict.upper(), VERDICT_STYLE.get(verdict, "bold")),
                         f"  window {report['window_s']:g}s  {report['generated_at']}")
    console.print(head)
    console.print()
    if report["root_causes"]:
        console.print(Text("Possible root causes (best first)", style="bold"))
        for rank, cause in enumerate(report["root_causes"], 1):
            body = [Text(cause["title"])]
            if cause.get("explained_by"):
                body.append(Text("Ranked below " + ", ".join(cause["explained_by"]) + ", which would explain it.",
                                 style="dim"))
            body.append(Text("Evidence (measured):", style="bold"))
            body.append(bullets(cause["evidence"]))
            if cause["mitigations"]["immediate"]:
                body.append(Text("Do now:", style="bold"))
                body.append(bullets(cause["mitigations"]["immediate"]))
            if cause["mitigations"]["long_term"]:
                body.append(Text("Later:", style="bold"))
                body.append(bullets(cause["mitigations"]["long_term"]))
            if cause.get("next_commands"):
                body.append(Text("To confirm:", style="bold"))
                body.append(bullets(cause["next_commands"], mark="$", style="cyan"))
            title = Text.assemble(f"{rank}. ", (cause["id"], "bold"), f"  {cause['subject']}  ",
                                  (score_bar(cause["score"]), "red" if cause["score"] >= 0.7 else "yellow"),
                                  f" {cause['score']:.2f}  step {cause['step']}")
            console.print(Panel(Group(*body), title=title, title_align="left", expand=True))
    else:
        console.print("No possible root cause scored above the floor.")
    console.print()

    table = Table(title="Queues (biggest problem first)", title_justify="left", expand=False)
    for column, justify in (("system", "left"), ("queue", "left"), ("depth", "right"), ("in/s", "right"),
                            ("out/s", "right"), ("consumers", "right"), ("fill", "right"), ("status", "left"),
                            ("trend", "left")):
        table.add_column(column, justify=justify)
    for q in report["queues"]:
        table.add_row(q["system"], queue_label(q), fmt_num(q["depth"]), fmt_num(q["rate_in"]), fmt_num(q["rate_out"]),
                      fmt_num(q["consumers"]), fmt_fill(q["fill_ratio"]),
                      Text(str(q["status"] or "—"), style="red" if q.get("backing_up") else ""),
                      sparkline(q.get("depth_samples")))
    if report["queues"]:
        console.print(table)
    else:
        console.print("No queues observed (give --kafka, --rabbitmq or --redis, or run where a broker listens).")
    console.print()

    console.print(Text("The six steps", style="bold"))
    for step in report["steps"]:
        console.print(Text.assemble(f"{step['number']}. ", (step["name"], "bold")))
        if step["findings"]:
            console.print(bullets(f"{f['text']}  [{f['cause']}]" for f in step["findings"]))
        else:
            console.print(Text(f"   {step.get('note', 'nothing found')}", style="dim"))
    console.print()

    probes = Table(title="Probes", title_justify="left")
    probes.add_column("probe")
    probes.add_column("status")
    probes.add_column("seconds", justify="right")
    probes.add_column("error")
    for p in report["probes"]:
        probes.add_row(p["name"], Text(p["status"], style=STATUS_STYLE.get(p["status"], "")), f"{p['duration_s']:.2f}",
                       p["error"] or "")
    console.print(probes)
