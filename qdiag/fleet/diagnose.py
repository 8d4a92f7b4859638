"""A merged document (merge.py) -> one report.

The queues come from the primary's brokers; every host's own evidence (its
processes, threads, host, dependencies, logs) is joined once with those queues
and with the consumers matched to it, so the rules of steps 2-4 run on a remote
consumer exactly as on a local one.  Each host's context facts (its CPU, its
memory) are added on a view of its own: a process's rules see its own host.

Subjects carry the host: pids are qualified before the join (process:web-3/4127),
and every other subject of a host's evidence is named with it (host:web-3,
dependency:web-3/tcp://10.0.0.7:5432).  Commands a cause suggests are run where
its subject is: prefixed with how to reach that host (ssh web-3 '...').
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Any

from qdiag.brokers import BROKER_NAMES
from qdiag.diagnosis import engine, facts
from qdiag.diagnosis.facts import Subject
from qdiag.diagnosis.playbook import Rule
from qdiag.fleet.merge import Host, hosts as hosts_of, match
from qdiag.probe import all_probes

# The fact every subject of a host's own evidence carries: the host it was seen on.
HOST_FACT = "seen_on"


def about_brokers(item: dict) -> bool:
    """A probe item whose evidence is the brokers' (the same from every host that probed them)."""
    probe = all_probes().get(item.get("name"))
    return bool(probe and set(probe.needs) & set(BROKER_NAMES))


def qualify(subject: str, host: str) -> str:
    """'host' -> 'host:web-3'; 'dependency:tcp://x' -> 'dependency:web-3/tcp://x'; a subject
    already naming the host (process:web-3/4127) stays as it is."""
    if f"{host}/" in subject or subject.endswith(f":{host}"):
        return subject
    kind, sep, rest = subject.partition(":")
    return f"{kind}:{host}/{rest}" if sep else f"{subject}:{host}"


@dataclasses.dataclass
class FleetJoin:
    subjects: list[Subject]
    shared: dict[str, Any]
    doc: dict  # the joined document (primary's brokers + every host's evidence)
    hosts: list[Host]
    claims: list[dict]
    unmatched: list[dict]


def join(merged: dict, baseline: dict | None = None) -> FleetJoin:
    all_hosts = hosts_of(merged)
    matching = match(all_hosts)
    primary = all_hosts[0]
    broker_items = [i for i in primary.doc.get("probes") or [] if about_brokers(i)]
    own_items = {h.name: [i for i in h.doc.get("probes") or [] if not about_brokers(i)]
                 for h in all_hosts if h.doc is not None}
    discovered = [d for h in all_hosts if h.doc is not None for d in h.doc.get("discovered") or []
                  if isinstance(d, dict) and d.get("pid") is not None] + matching.claims
    doc = {**primary.doc, "probes": broker_items + [i for items in own_items.values() for i in items],
           "discovered": discovered}
    everything = facts.contributors_of(doc)
    joined = facts.join_core(doc, baseline, everything)
    facts.add_context(joined, facts.contributors_of({"probes": broker_items}))
    subjects = [Subject("queue", q["subject"], {**joined.shared, **q}) for q in joined.queues]
    brokers_seen = facts.contributors_of({"probes": broker_items})
    subjects += [Subject(s.kind, s.id, {**joined.shared, **s.facts})
                 for probe, obs in brokers_seen if probe.diagnosis.subjects
                 for s in probe.diagnosis.subjects(obs, joined) or ()]
    symptoms = list(joined.shared.get("symptoms") or [])
    for name, items in own_items.items():
        contributors = facts.contributors_of({"probes": items})
        view = dataclasses.replace(joined, shared=dict(joined.shared), exported=facts.shares(contributors))
        facts.add_context(view, contributors)
        symptoms += [s for s in view.shared.get("symptoms") or [] if s not in symptoms]
        for probe, obs in contributors:
            if probe.diagnosis.subjects:
                for s in probe.diagnosis.subjects(obs, view) or ():
                    subjects.append(Subject(s.kind, qualify(s.id, name),
                                            {**view.shared, **s.facts, HOST_FACT: name}))
    shared = dict(joined.shared)
    if symptoms:
        shared.update(symptoms=symptoms, backlog_in_focus=True, backlog_any=True, backlog_or_unknown=True)
    return FleetJoin(subjects, shared, doc, all_hosts, matching.claims, matching.unmatched)


def evaluate(rules: list[Rule], fj: FleetJoin) -> list[engine.Hit]:
    hits = engine.evaluate_subjects(rules, fj.subjects)
    for hit in hits:
        # A rule may name its subject itself (subject = "host"): still the host it saw.
        if hit.facts.get(HOST_FACT):
            hit.subject = qualify(hit.subject, hit.facts[HOST_FACT])
    return hits


# --- where a suggested command runs ----------------------------------------------------------

def _access(entry: dict) -> str:
    return entry.get("access") or ""


def plain_pids(text: str, host: Host) -> str:
    """'py-spy dump --pid web-1/4127' -> 'py-spy dump --pid 4127' (on web-1)."""
    return re.sub(rf"(?<![\w.]){re.escape(host.name)}/(\d+)\b", r"\1", text)


def _run_there(command: str, host: Host) -> str:
    """A command as it is run on `host`, its qualified pids back to plain ones."""
    plain = plain_pids(command, host)
    access = _access(host.entry)
    if host.primary and not access:
        return plain
    if access:
        return f"{access} {shlex.quote(plain)}" if access.startswith("ssh ") else f"{access} {plain}"
    return f"on {host.name}: {plain}"


def host_named(text: str, all_hosts: list[Host]) -> Host | None:
    # Longest names first: "b-web-1/7" is b-web-1's pid, not web-1's.
    for host in sorted(all_hosts, key=lambda h: -len(h.name)):
        if re.search(rf"(?<![\w.]){re.escape(host.name)}/\d+\b", text) or text.endswith(f":{host.name}"):
            return host
    return None


def localise(causes: list[dict], all_hosts: list[Host]) -> None:
    """Commands of a cause run on the host its subject (or the pid they name) is on."""
    for cause in causes:
        home = host_named(str(cause.get("subject") or ""), all_hosts)
        for key in ("next_commands",):
            cause[key] = [_run_there(c, host_named(c, all_hosts) or home) if (home or host_named(c, all_hosts))
                          else c for c in cause.get(key) or []]
        mitigations = cause.get("mitigations") or {}
        for key in ("immediate", "long_term"):
            # Mitigations are prose: only the pids are made plain, with the host said once.
            mitigations[key] = [_prose_there(m, all_hosts) for m in mitigations.get(key) or []]


def _prose_there(text: str, all_hosts: list[Host]) -> str:
    host = host_named(text, all_hosts)
    if host is None:
        return text
    return f"on {host.name}: {plain_pids(text, host)}"
