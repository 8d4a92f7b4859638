"""Report renderers: text (terminals and plain files), markdown (tickets), json (tools).

Text and Markdown follow one layout, the answer first:
  1. the verdict and the answer in one sentence (top cause, its subject, the
     decisive number), then what was probed, how each target was found, the
     baseline;
  2. the queues in focus as a compact table (the others folded into one line);
  3. the causes, most likely first: certainty in words, what was measured, what
     to do, what to run to confirm; causes about queues not in focus folded
     into one line each;
  4. lag detail, the six steps and the probes, short.
Both strip control characters from every string of the report first (names
come from brokers); Markdown also escapes what Markdown would interpret.
The text renderer draws nothing but ASCII unless told the output is a
terminal (`unicode`), and colours only when told to (`color`).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass

from qdiag.brokers import broker_flags
from qdiag.report import summary as s

# Queue rows shown in the table; the rest are counted on one line.
MAX_QUEUE_ROWS = 8
# Consumer lines before the causes; kept short so the top cause stays on the first screen.
MAX_CONSUMER_ROWS = 2
LABEL_WIDTH = 9  # "measured", "do now", ... in the cause blocks

_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "magenta": "35", "cyan": "36"}
VERDICT_STYLE = {"healthy": "bold green", "degraded": "bold yellow", "critical": "bold red", "unknown": "bold magenta"}
CONFIDENCE_STYLE = {"very likely": "bold red", "likely": "red", "possible": "yellow", "weak": "dim"}


@dataclass(frozen=True)
class Glyphs:
    rule: str
    bullet: str
    ellipsis: str
    dot: str


UNICODE = Glyphs(rule="─", bullet="•", ellipsis="…", dot=" · ")
ASCII = Glyphs(rule="-", bullet="-", ellipsis="...", dot=", ")


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


# --- text ---------------------------------------------------------------------------------

class _Text:
    """Lines of at most `width` columns; styles (ANSI SGR) only when colour is on."""

    def __init__(self, width: int, color: bool, glyphs: Glyphs):
        self.width = max(40, width)
        self.color = color
        self.g = glyphs
        self.lines: list[str] = []

    def style(self, text: str, style: str | None) -> str:
        if not self.color or not style or not text:
            return text
        codes = ";".join(_SGR[name] for name in style.split())
        return f"\x1b[{codes}m{text}\x1b[0m"

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def wrap(self, text: str, *, indent: int = 0, first: str = "", first_style: str | None = None,
             style: str | None = None, hang: int | None = None) -> None:
        """`first` + `text`, wrapped; continuation lines indented by `hang` (default: under the text)."""
        lead = " " * indent + first
        hang = len(lead) if hang is None else hang
        body = textwrap.wrap(text, width=self.width, initial_indent=" " * len(lead),
                             subsequent_indent=" " * hang, break_on_hyphens=False, break_long_words=False) or [""]
        for number, line in enumerate(body):
            if number == 0:
                rest = line[len(lead):]
                self.add(" " * indent + self.style(first, first_style) + self.style(rest, style))
            else:
                self.add(self.style(line, style))

    def fit(self, text: str) -> str:
        """One line, cut with an ellipsis at the width."""
        if len(text) <= self.width:
            return text
        return text[: self.width - len(self.g.ellipsis)] + self.g.ellipsis

    def title(self, text: str) -> None:
        self.add(self.style(text, "bold"))

    def table(self, header: list[str], rows: list[list[str]], right: set[int], styles: list[str | None]) -> None:
        """Columns two spaces apart.  When the page is too narrow the first column (names) and then the last
        (status) wrap onto more lines: a name is never cut, it is what one pastes into the next command."""
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        for column, floor in ((0, 12), (len(widths) - 1, 8)):
            over = sum(widths) + 2 * (len(widths) - 1) + 2 - self.width
            if over > 0:
                widths[column] = max(floor, len(header[column]), widths[column] - over)

        def line(cells: list[str]) -> str:
            return "  " + "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                                    for i, c in enumerate(cells)).rstrip()

        self.add(self.style(line(header), "bold"))
        self.add("  " + "  ".join(self.g.rule * w for w in widths))
        last = len(header) - 1
        for row, style in zip(rows, styles):
            names, statuses = _split_name(row[0], widths[0]), _split_cell(row[last], widths[last])
            for n in range(max(len(names), len(statuses))):
                cells = [row[i] if n == 0 else "" for i in range(len(row))]
                cells[0] = (names[n] if n == 0 else " " + names[n]) if n < len(names) else ""
                cells[last] = statuses[n] if n < len(statuses) else ""
                self.add(self.style(line(cells), style))


def _split_cell(value: str, width: int) -> list[str]:
    return textwrap.wrap(value, width=width, break_on_hyphens=False) or [""]


def _split_name(name: str, width: int) -> list[str]:
    """`name` in pieces of at most `width` characters (continuations one less, for their indent),
    broken after a '/', ':' or '.' where possible."""
    parts = []
    while len(name) > width:
        cut = width
        for seps in ("/", ":", ".-_"):  # the group, then the system, then words of the name
            at = max(name.rfind(sep, 0, width) for sep in seps) + 1
            if at > width // 3:
                cut = at
                break
        parts.append(name[:cut])
        name = name[cut:]
        width = max(4, width - 1) if len(parts) == 1 else width
    return parts + [name]


def render_text(report: dict, *, color: bool, unicode: bool = True, width: int | None = None) -> str:
    r = s.clean(report)
    out = _Text(width or 100, color, UNICODE if unicode else ASCII)
    _text_head(out, r)
    _text_queues(out, r)
    _text_consumers(out, r)
    shown = _text_causes(out, r)
    _text_lag(out, r)
    _text_steps(out, r, shown)
    _text_probes(out, r)
    return "\n".join(line.rstrip() if not color else line for line in out.lines) + "\n"


def _text_head(out: _Text, r: dict) -> None:
    verdict = str(r.get("verdict") or "unknown")
    out.wrap(s.answer(r), first=verdict.upper() + ": ", first_style=VERDICT_STYLE.get(verdict, "bold"), hang=2)
    for reason in s.verdict_reasons(r)[1 if verdict == "unknown" else 0:]:
        out.wrap(f"- {reason}", hang=4)
    window = s.number(r.get("window_s"))
    made = (f"snapshot by qdiag {r.get('qdiag_version') or '?'} on {r.get('host') or '?'} at "
            f"{r.get('generated_at') or '?'}" + (f", window {window:g}s" if window is not None else "")
            + f"; {s.baseline_text(r)}")
    out.wrap(made, style="dim", hang=2)
    # Named queues and groups show as the queues in focus; the rest of what was named is said here.
    named = s.named_text(r, skip=("queues", "groups"))
    out.wrap(f"targets: {s.targets_text(r)}" + (f"; named: {named}" if named else ""), style="dim", hang=2)
    out.add()


def _text_queues(out: _Text, r: dict) -> None:
    focus, others = s.queues_split(r)
    if not focus and not others:
        out.wrap(f"No queues observed (give {broker_flags()}, or run where a broker listens).", hang=2)
        out.add()
        return
    named = s.named_text(r, only=("queues", "groups"))
    out.title("Queues in focus" if named else "Queues")
    shown = focus[:MAX_QUEUE_ROWS]
    if shown:
        rows = [[s.label(q), s.fmt_num(q.get("depth")), s.fmt_num(q.get("rate_in")), s.fmt_num(q.get("rate_out")),
                 s.fmt_num(q.get("consumers")), s.lag_time(q) or "-", s.status_text(q)] for q in shown]
        out.table(["queue", "depth", "in/s", "out/s", "consumers", "lag", "status"], rows, right={1, 2, 3, 4, 5},
                  styles=["red" if q.get("backing_up") else None for q in shown])
    else:
        out.add(f"  none of the queues named ({named}) was found")
    if len(focus) > len(shown):
        more = focus[len(shown):]
        out.add(out.fit(f"  + {len(more)} more in focus ({sum(1 for q in more if q.get('backing_up'))} backing up): "
                        + ", ".join(s.label(q) for q in more)))
    if others:
        backing = [q for q in others if q.get("backing_up")]
        out.add(out.fit(f"  not in focus: {len(others)} more queue(s), {len(backing)} backing up: "
                        + ", ".join(s.label(q) for q in (backing or others))))
    out.add()


def _text_consumers(out: _Text, r: dict) -> None:
    """A line for each consumer the kernel was sampled for (where its threads waited): the JSON and
    Markdown list every consumer, the first screen only those with something to say."""
    focus, others = s.consumers_split(r)
    sampled = [c for c in focus if s.consumer_sampled(c)]
    if not sampled:
        return
    shown = sampled[:MAX_CONSUMER_ROWS]
    out.title("Consumers")
    for c in shown:
        out.wrap(s.consumer_line(c), indent=2, first=f"{s.consumer_label(c)}: ", hang=4)
    rest = [c for c in focus if c not in shown]
    if rest or others:
        brief = ", ".join(f"{s.consumer_label(c)} {s.consumer_brief(c)}" for c in rest)
        tail = f"{len(others)} not in focus" if others else ""
        out.add(out.fit(f"  + {len(rest)} more" + (f": {brief}" if brief else "") + (f"; {tail}" if tail else "")))
    out.add()


def _text_causes(out: _Text, r: dict) -> set[tuple[str, str]]:
    focused, others = s.causes_split(r)
    shown = {(c.get("id"), c.get("subject")) for c in focused + others}
    if not focused and not others:
        out.add("No possible root cause scored above the floor.")
        out.add()
        return shown
    if focused:
        out.title("Causes, most likely first")
    first_of: dict[str, int] = {}
    for rank, group in enumerate(s.fold(focused), 1):
        cause = group[0]
        word = s.confidence(cause)
        meta = f"{word}{out.g.dot}{cause.get('id')}" + (f"{out.g.dot}step {cause['step']}" if cause.get("step") else "")
        _text_title(out, f"{rank}. ", s.group_headline(group), meta, CONFIDENCE_STYLE.get(word))
        _text_block(out, "measured", s.group_evidence(group))
        follows = s.group_union(group, "explained_by")
        if follows:
            _text_block(out, "follows", [", ".join(follows) + " would explain it"], style="dim")
        mitigations = cause.get("mitigations") or {}
        _text_block(out, "do now", [s.text(m) for m in mitigations.get("immediate") or []])
        if cause.get("id") in first_of:
            if mitigations.get("long_term"):
                _text_block(out, "later", [f"as for {first_of[cause.get('id')]}"], style="dim")
        else:
            first_of[cause.get("id")] = rank
            _text_block(out, "later", [s.text(m) for m in mitigations.get("long_term") or []])
        _text_block(out, "confirm", [f"$ {c}" for c in s.group_union(group, "next_commands")], wrap=False,
                    style="cyan")
    if others:
        if focused:
            out.add()
        out.title("Not in focus (about queues not named with --queue/--group)")
        for group in s.fold(others):
            subjects = ", ".join(str(c.get("subject")) for c in group)
            out.add(out.fit(f"  {out.g.bullet} {group[0].get('id')} {subjects} ({s.confidence(group[0])}): "
                            f"{s.decisive(group[0])}"))
    out.add()
    return shown


def _text_title(out: _Text, number: str, headline: str, meta: str, meta_style: str | None) -> None:
    """`1. headline  meta`: the meta (certainty, cause id, step) at the end of the last line, or on its own."""
    out.wrap(headline, first=number, first_style="bold", style="bold")
    last = out.lines[-1]
    visible = len(textwrap.wrap(number + headline, width=out.width, break_on_hyphens=False,
                                break_long_words=False)[-1])
    if visible + 2 + len(meta) <= out.width:
        out.lines[-1] = last + "  " + out.style(meta, meta_style)
    else:
        out.add(" " * len(number) + out.style(meta, meta_style))


def _text_block(out: _Text, label: str, items: list[str], *, wrap: bool = True, style: str | None = None) -> None:
    for number, item in enumerate(i for i in items if i):
        first = (label if number == 0 else "").ljust(LABEL_WIDTH)
        if wrap:
            out.wrap(item, indent=3, first=first, first_style="dim", style=style)
        else:
            out.add("   " + out.style(first, "dim") + out.style(item, style))


def _text_lag(out: _Text, r: dict) -> None:
    focus, _ = s.queues_split(r)
    detailed = [q for q in focus if s.has_lag_detail(q) and q.get("backing_up")]
    if not detailed:
        return
    out.title("Lag")
    for q in detailed:
        lines = s.lag_detail(q)
        for number, line in enumerate(lines):
            out.wrap(line, indent=2, first=f"{s.label(q)}: " if number == 0 else "  ", hang=6)
    out.add()


def _text_steps(out: _Text, r: dict, shown: set) -> None:
    steps = [st for st in r.get("steps") or [] if isinstance(st, dict)]
    if not steps:
        return
    out.title("The six steps")
    width = max(len(str(st.get("name") or "?")) for st in steps)
    for st in steps:
        line, extra = s.step_line(st, shown)
        out.wrap(line, indent=2, first=f"{st.get('number')}. {str(st.get('name') or '?').ljust(width)}  ",
                 style=None if st.get("findings") else "dim")
        for finding in extra:
            out.wrap(finding, indent=5, first=f"{out.g.bullet} ")
    out.add()


def _text_probes(out: _Text, r: dict) -> None:
    ok, other = s.probe_groups(r)
    out.wrap(", ".join(ok) if ok else "none", first="Probes ok: ", first_style="bold", hang=2)
    for name, status, why in other:
        out.wrap(why or status, indent=2, first=f"{name} {status}: ",
                 first_style="red" if status in ("error", "timeout") else "dim", hang=4)


# --- markdown -------------------------------------------------------------------------------

_MD_SPECIAL = set("\\`*_[]<>|~&#")


def md(text: object) -> str:
    """Text that GitHub and GitLab Markdown show as written (no tags, links, emphasis or table breaks)."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text))


def md_code(text: object) -> str:
    """An inline code span that survives backticks in the text."""
    value = str(text)
    longest, run = 0, 0
    for c in value:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def md_block(lines: list[str]) -> list[str]:
    """A fenced code block, its fence longer than any backtick run inside it."""
    fence = "```"
    while any(fence in line for line in lines):
        fence += "`"
    return [fence + "sh", *lines, fence]


def render_markdown(report: dict) -> str:
    r = s.clean(report)
    verdict = str(r.get("verdict") or "unknown")
    lines = [f"# qdiag report: {md(r.get('host') or '?')}", "",
             f"**{verdict.upper()}**: {md(s.answer(r))}", ""]
    more = s.verdict_reasons(r)[1 if verdict == "unknown" else 0:]
    if more:
        lines += [f"- {md(reason)}" for reason in more] + [""]
    window = s.number(r.get("window_s"))
    lines += [
        f"- **Command:** {md_code(s.command_text(r))}" if s.command_text(r) else "- **Command:** unknown",
        f"- **Taken:** {md(r.get('generated_at') or '?')} on {md(r.get('host') or '?')} by qdiag "
        f"{md(r.get('qdiag_version') or '?')}" + (f", window {window:g} s" if window is not None else ""),
        f"- **Targets:** {md(s.targets_text(r))}",
    ]
    if s.named_text(r):
        lines.append(f"- **Named:** {md(s.named_text(r))}")
    lines += [f"- **Baseline:** {md(s.baseline_text(r))}", ""]

    focus, others = s.queues_split(r)
    lines += ["## Queues in focus" if s.named_text(r) or others else "## Queues", ""]
    if focus:
        lines += ["| queue | depth | in/s | out/s | consumers | lag | status |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for q in focus:
            cells = [s.label(q), s.fmt_num(q.get("depth")), s.fmt_num(q.get("rate_in")), s.fmt_num(q.get("rate_out")),
                     s.fmt_num(q.get("consumers")), s.lag_time(q) or "-", s.status_text(q)]
            lines.append("| " + " | ".join(md(c) for c in cells) + " |")
    else:
        lines.append("No queues observed." if not others else "None of the queues named was found.")
    if others:
        backing = sum(1 for q in others if q.get("backing_up"))
        lines += ["", f"Not in focus: {len(others)} more queue(s), {backing} backing up: "
                      + ", ".join(md(s.label(q)) for q in others)]
    lines.append("")

    consumers, elsewhere = s.consumers_split(r)
    if consumers or elsewhere:
        lines += ["## Consumers", ""]
        lines += [f"- **{md(s.consumer_label(c))}**" + (f" ({md(c['queue'])})" if c.get("queue") else "")
                  + f": {md(s.consumer_line(c))}" for c in consumers]
        if elsewhere:
            lines.append("- not in focus: " + ", ".join(md(s.consumer_label(c)) for c in elsewhere))
        lines.append("")

    focused, folded = s.causes_split(r)
    lines += ["## Possible root causes", ""]
    if not focused and not folded:
        lines += ["No possible root cause scored above the floor.", ""]
    for rank, group in enumerate(s.fold(focused), 1):
        cause = group[0]
        lines += [f"### {rank}. {md(s.group_headline(group))}", "",
                  f"*{s.confidence(cause)}* · {md_code(cause.get('id'))}"
                  + (f" · step {md(cause['step'])}" if cause.get("step") else ""), ""]
        lines += [f"- **Measured:** {md(e)}" for e in s.group_evidence(group, strip=False)]
        follows = s.group_union(group, "explained_by")
        if follows:
            lines.append(f"- **Follows:** {md(', '.join(follows))} would explain it")
        mitigations = cause.get("mitigations") or {}
        lines += [f"- **Do now:** {md(s.text(m))}" for m in mitigations.get("immediate") or []]
        lines += [f"- **Later:** {md(s.text(m))}" for m in mitigations.get("long_term") or []]
        commands = s.group_union(group, "next_commands")
        if commands:
            lines += ["", "To confirm:", "", *md_block(commands)]
        lines.append("")
    if folded:
        lines += ["### Not in focus", ""]
        lines += [f"- {md_code(g[0].get('id'))} {md(', '.join(str(c.get('subject')) for c in g))} "
                  f"({s.confidence(g[0])}): {md(s.decisive(g[0]))}" for g in s.fold(folded)]
        lines.append("")

    detailed = [q for q in focus if s.has_lag_detail(q) and q.get("backing_up")]
    if detailed:
        lines += ["## Lag", ""]
        for q in detailed:
            lines += [f"- {md(s.label(q))}: " + "; ".join(md(line) for line in s.lag_detail(q))]
        lines.append("")

    shown = {(c.get("id"), c.get("subject")) for c in focused + folded}
    lines += ["## The six steps", ""]
    for step in r.get("steps") or []:
        summary, extra = s.step_line(step, shown)
        lines.append(f"{md(step.get('number'))}. **{md(step.get('name') or '?')}**: {md(summary)}")
        lines += [f"   - {md(f)}" for f in extra]
    lines += ["", "## Probes", "", "| probe | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for p in r.get("probes") or []:
        seconds = s.number(p.get("duration_s"))
        lines.append(f"| {md(p.get('name'))} | {md(p.get('status') or '?')} | "
                     f"{f'{seconds:.2f}' if seconds is not None else ''} | {md(s.text(p.get('error')))} |")
    return "\n".join(lines) + "\n"
