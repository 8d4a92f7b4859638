"""qdiag explain CAUSE-ID: what a root cause means, how qdiag decides it (every
rule for it in the loaded playbooks, their conditions and thresholds as
written), and what to do, read from the playbooks themselves, so a team's own
--playbook files are explained as they will be applied."""

from __future__ import annotations

import difflib
import json
import textwrap
from typing import Any

from qdiag.diagnosis import engine
from qdiag.diagnosis.playbook import Rule
from qdiag.diagnosis.taxonomy import CAUSES, MEANINGS, STEPS
from qdiag.environment import Environment
from qdiag.errors import UsageError
from qdiag.inputs import load_rules

SCHEMA = "qdiag.explain/1"
FORMATS = ("text", "json")


def closest(cause_id: str) -> str:
    """The known cause id nearest to a mistyped one."""
    found = difflib.get_close_matches(cause_id.lower(), list(CAUSES), n=1, cutoff=0.0)
    return found[0] if found else next(iter(CAUSES))


def _rule_doc(rule: Rule) -> dict[str, Any]:
    return {"id": rule.id, "source": rule.source, "for": rule.kind, "step": rule.step, "when": rule.when,
            "strength": rule.strength, "weight": rule.weight, "evidence": rule.evidence,
            "description": rule.description or None, "subject": rule.subject, "immediate": list(rule.immediate),
            "long_term": list(rule.long_term), "next": list(rule.next)}


def explanation(cause_id: str, rules: list[Rule]) -> dict[str, Any]:
    """The explain document (qdiag.explain/1) of one cause."""
    if cause_id not in CAUSES:
        raise UsageError(f"unknown cause {cause_id!r}: did you mean {closest(cause_id)}?",
                         "the causes are listed by 'qdiag playbooks list'")
    mine = sorted((r for r in rules if r.cause == cause_id), key=lambda r: (-r.weight, r.id))
    return {
        "schema": SCHEMA,
        "id": cause_id,
        "step": CAUSES[cause_id],
        "step_name": STEPS[CAUSES[cause_id]],
        "title": engine.TITLES[cause_id].format(subject="<subject>"),
        "meaning": MEANINGS.get(cause_id),
        "scoring": {"score_floor": engine.SCORE_FLOOR, "out_of_focus_factor": engine.OUT_OF_FOCUS,
                    "demotion": engine.DEMOTION},
        # Causes that, when they also score, would explain this one: it then ranks below them.
        "explained_by": list(engine.EXPLAINED_BY.get(cause_id, ())),
        "explains": [c for c, by in engine.EXPLAINED_BY.items() if cause_id in by],
        "rules": [_rule_doc(r) for r in mine],
    }


def _wrapped(text: str, indent: str, width: int, first: str = "") -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent + first, subsequent_indent=indent + " " * len(first),
                         break_on_hyphens=False, break_long_words=False) or [indent + first]


def render_text(doc: dict[str, Any], width: int = 100) -> str:
    width = max(60, width)
    lines = [f"{doc['id']}: {doc['title']}  (step {doc['step']}, {doc['step_name']})", ""]
    lines += _wrapped(doc["meaning"] or "", "  ", width) + [""]

    lines.append("How qdiag decides")
    scoring = doc["scoring"]
    lines += _wrapped(
        f"Each rule below is evaluated on every subject of its kind; where its condition holds it adds "
        f"weight x strength as independent evidence (noisy-OR). A cause scoring under {scoring['score_floor']:g} "
        f"is only a finding; one resting on queues not named with --queue/--group is scaled by "
        f"{scoring['out_of_focus_factor']:g}.", "  ", width)
    if doc["explained_by"]:
        lines += _wrapped(f"It ranks below {', '.join(doc['explained_by'])} when one of those also scores on the "
                          f"same queue (they would explain it).", "  ", width)
    if doc["explains"]:
        lines += _wrapped(f"It explains {', '.join(doc['explains'])}: those rank below it when both score.",
                          "  ", width)
    if not doc["rules"]:
        lines += ["", "  No loaded rule names this cause (a --playbook file may have switched them off)."]
    for rule in doc["rules"]:
        lines += ["", f"  {rule['id']}  ({rule['source']})"]
        lines += _wrapped(f"for each {rule['for']} subject, step {rule['step']}, weight {rule['weight']:g}"
                          + (f"; {rule['description']}" if rule["description"] else ""), "    ", width)
        for label, key in (("when", "when"), ("strength", "strength"), ("evidence", "evidence")):
            if rule[key]:
                lines += _wrapped(str(rule[key]), "    ", width, first=f"{label:<9} ")

    lines += ["", "What to do"]
    sections = (("now", "immediate"), ("later", "long_term"), ("confirm", "next"))
    for label, key in sections:
        items = list(dict.fromkeys(item for rule in doc["rules"] for item in rule[key]))
        for number, item in enumerate(items):
            first = f"{label if number == 0 else '':<9} "
            if key == "next":
                lines.append(f"  {first}$ {item}")
            else:
                lines += _wrapped(item, "  ", width, first=first)
    lines += ["", "Fields in {braces} are filled in from what qdiag measured; a command whose field is unknown is "
                  "left out of the report."]
    return "\n".join(lines) + "\n"


def run(env: Environment, cause_id: str, *, fmt: str, playbooks: list[str]) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not known", "use text or json")
    doc = explanation(cause_id, load_rules(playbooks))
    if fmt == "json":
        env.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        env.stdout.write(render_text(doc, env.width()))
