"""Walk the rules over the subjects, score each (cause, subject), rank them,
and decide the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qdiag.diagnosis import expr, template
from qdiag.diagnosis.facts import Subject, in_focus, queue_records, queue_subject, steps_fed, subjects
from qdiag.diagnosis.playbook import Rule
from qdiag.diagnosis.taxonomy import CAUSES, STEPS

# Below this a cause is not reported as a possible root cause (it stays a finding).
SCORE_FLOOR = 0.3
# Consequences rank below what explains them: a full queue is what consumers
# being stuck, absent or slow looks like from the broker's side.
EXPLAINED_BY = {
    "queue-limit-reached": ("consumers-absent", "consumer-stuck", "slow-consumer-logic", "slow-dependency",
                            "dependency-failure", "cpu-saturation", "memory-pressure", "io-saturation",
                            "network-saturation", "os-limit-reached", "poison-message", "undersized-consumer-pool",
                            "traffic-spike", "partition-skew"),
    # Too few consumers is only the answer when the ones there are healthy, have
    # the resources they need, and the load is the usual one.
    "undersized-consumer-pool": ("cpu-saturation", "consumer-stuck", "slow-dependency", "slow-consumer-logic",
                                 "memory-pressure", "io-saturation", "network-saturation", "dependency-failure",
                                 "poison-message", "os-limit-reached", "traffic-spike", "partition-skew"),
    # Every message failing downstream (or in a consumer out of descriptors, or
    # killed for memory) is redelivered too: from the queue's side that looks
    # like poison, but no message is to blame.
    "poison-message": ("dependency-failure", "os-limit-reached", "memory-pressure"),
    # A consumer spinning through redeliveries of the same messages is busy on
    # CPU because of them: the hot loop follows from the poison messages.
    "slow-consumer-logic": ("poison-message",),
    # Commits that stall while the consumer's threads wait on a downstream
    # service are that service's slowness seen from the broker.
    "consumer-stuck": ("slow-dependency", "dependency-failure"),
}
DEMOTION = 0.9
# Subjects the user did not point at (queues a probe reported for context while
# --queue/--group named others) rank after the ones named.
OUT_OF_FOCUS = 0.5

@dataclass
class Hit:
    rule: Rule
    subject: str
    strength: float
    evidence: str
    facts: dict[str, Any] = field(repr=False, default_factory=dict)


def _strength(rule: Rule, facts: dict) -> float:
    if rule.strength_tree is None:
        return 1.0
    value = expr.evaluate(rule.strength_tree, facts)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 1.0 if value else 0.0
    try:
        value = float(value)
    except OverflowError:  # an integer fact past any float: as strong as it gets
        value = 1.0 if value > 0 else 0.0
    return max(0.0, min(1.0, value)) if value == value else 0.0  # nan: no strength


def evaluate(rules: list[Rule], snapshot: dict, baseline: dict | None = None,
             broken: list[dict] | None = None) -> list[Hit]:
    return evaluate_subjects(rules, list(subjects(snapshot, baseline)), broken)


def evaluate_subjects(rules: list[Rule], all_subjects: list[Subject], broken: list[dict] | None = None) -> list[Hit]:
    """Every rule on every subject of its kind.  A rule that raises (a playbook
    the validator could not fault, facts it did not foresee) is recorded in
    `broken` with its first error and the number of subjects it failed on; the
    other rules still run."""
    hits = []
    failed: dict[str, dict] = {}
    for rule in rules:
        for subject in all_subjects:
            if subject.kind != rule.kind:
                continue
            try:
                hit = _apply(rule, subject)
            except Exception as exc:  # noqa: BLE001 - isolation is the point
                entry = failed.setdefault(rule.id, {"rule": rule.id, "source": rule.source, "subjects": 0,
                                                    "error": f"{type(exc).__name__}: {str(exc)[:160]}".rstrip(": ")})
                entry["subjects"] += 1
                continue
            if hit is not None:
                hits.append(hit)
    if broken is not None:
        broken.extend(failed.values())
    return hits


def _apply(rule: Rule, subject: Subject) -> Hit | None:
    if not expr.evaluate(rule.when_tree, subject.facts):
        return None
    strength = _strength(rule, subject.facts)
    if strength <= 0:
        return None
    subject_id = template.render(rule.subject, subject.facts) if rule.subject else subject.id
    return Hit(rule, subject_id, strength, template.render(rule.evidence, subject.facts), subject.facts)


def broken_rule_text(entry: dict) -> str:
    return (f"rule {entry.get('rule')} ({entry.get('source')}) could not be evaluated on {entry.get('subjects')} "
            f"subject(s) and was left out: {entry.get('error')}")


def rank(hits: list[Hit]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Hit]] = {}
    for hit in hits:
        groups.setdefault((hit.rule.cause, hit.subject), []).append(hit)
    scored = []
    for (cause, subject), group in groups.items():
        # Independent pieces of evidence combine as a noisy-OR: each can only
        # add confidence, never push it past 1.
        miss = 1.0
        for hit in group:
            miss *= 1.0 - hit.rule.weight * hit.strength
        score = 1.0 - miss
        out_of_focus = all(hit.facts.get("focus") is False for hit in group)
        if out_of_focus:
            score *= OUT_OF_FOCUS
        scored.append({"id": cause, "subject": subject, "score": score, "hits": group, "out_of_focus": out_of_focus})
    # The best undemoted score per cause: over every item (for evidence that
    # concerns no queue in particular), over items that name no queue, and per
    # queue; one pass, so that thousands of queues do not cost a pairwise scan.
    # Kept twice: over every item, and over the items in focus only, since a
    # cause resting only on things the user did not point at cannot explain one
    # they did.
    queues_of = [_queues_of(item) for item in scored]
    indexes = {True: _ScoreIndex(), False: _ScoreIndex()}  # keyed by "may be explained by context"
    for item, theirs in zip(scored, queues_of):
        indexes[True].add(item["id"], item["score"], theirs)
        if not item["out_of_focus"]:
            indexes[False].add(item["id"], item["score"], theirs)
    for item, mine in zip(scored, queues_of):
        causes = EXPLAINED_BY.get(item["id"], ())
        if not causes:
            continue
        # Only evidence that can concern this item's queue explains it: a stuck
        # consumer of another queue says nothing about why this one is full.
        best: dict[str, float] = {}
        index = indexes[item["out_of_focus"]]
        for cause in causes:
            found = index.best(cause, mine)
            if found is not None:
                best[cause] = found
        top = max(best.values(), default=0.0)
        if top < SCORE_FLOOR:
            continue
        if item["score"] >= top * DEMOTION:
            item["score"] = top * DEMOTION
        # Said also when it already ranks below: the reader sees what it follows from.
        item["explained_by"] = [c for c in causes if best.get(c, 0.0) == top]
    # What the user pointed at first: a cause resting only on context ranks after every cause in focus.
    scored.sort(key=lambda i: (i["out_of_focus"], -round(i["score"], 6), CAUSES[i["id"]], i["id"], i["subject"]))
    out = []
    for item in scored:
        hits_sorted = sorted(item["hits"], key=lambda h: (-h.rule.weight * h.strength, h.rule.id))
        cause = {
            "id": item["id"], "score": round(item["score"], 3), "step": CAUSES[item["id"]],
            "subject": item["subject"], "title": _title(item["id"], item["subject"]),
            "evidence": _unique(h.evidence for h in hits_sorted),
            "mitigations": {
                "immediate": _unique(template.render(m, h.facts) for h in hits_sorted for m in h.rule.immediate),
                "long_term": _unique(template.render(m, h.facts) for h in hits_sorted for m in h.rule.long_term),
            },
            "next_commands": _unique(c for c in (template.command(c, h.facts) for h in hits_sorted for c in h.rule.next)
                                     if c is not None),
            "rules": [h.rule.id for h in hits_sorted],
        }
        if item.get("explained_by"):
            cause["explained_by"] = item["explained_by"]
        if item["out_of_focus"]:
            cause["out_of_focus"] = True
        out.append(cause)
    return out


class _ScoreIndex:
    """The best score per cause over some items: over all of them, over those
    whose evidence names no queue, and per queue they name."""

    def __init__(self) -> None:
        self.any: dict[str, float] = {}
        self.unqueued: dict[str, float] = {}
        self.by_queue: dict[str, dict[str, float]] = {}

    def add(self, cause: str, score: float, queues: set[str]) -> None:
        self.any[cause] = max(self.any.get(cause, score), score)
        if not queues:
            self.unqueued[cause] = max(self.unqueued.get(cause, score), score)
        for queue in queues:
            per = self.by_queue.setdefault(cause, {})
            per[queue] = max(per.get(queue, score), score)

    def best(self, cause: str, mine: set[str]) -> float | None:
        """The best score of `cause` among the items that can concern `mine`
        (every item when `mine` is empty; else those naming no queue or one of
        `mine`); None when there is none."""
        if not mine:
            return self.any.get(cause)
        found = self.unqueued.get(cause, -1.0)
        per = self.by_queue.get(cause)
        if per:
            for queue in mine:
                score = per.get(queue, -1.0)
                if score > found:
                    found = score
        return found if found >= 0.0 else None  # scores are >= 0


def _queues_of(item: dict) -> set[str]:
    """The queues an item's evidence is about: the queue itself for queue rules,
    the queue a process consumes for process and thread rules; empty when it
    cannot be told (host, dependency, broker-wide evidence)."""
    out = set()
    for hit in item["hits"]:
        if hit.rule.kind == "queue":
            out.add(hit.facts.get("subject"))
        elif isinstance(hit.facts.get("queue"), dict) and hit.facts["queue"].get("subject"):
            out.add(hit.facts["queue"]["subject"])
    return out


TITLES = {
    "consumers-absent": "nothing is consuming {subject}",
    "cpu-saturation": "out of CPU: {subject}",
    "memory-pressure": "memory pressure: {subject}",
    "io-saturation": "disk saturated: {subject}",
    "network-saturation": "network drops or retransmits: {subject}",
    "consumer-stuck": "consumer alive but not progressing: {subject}",
    "slow-consumer-logic": "consumer busy in its own code, too slow per message: {subject}",
    "poison-message": "the same messages redelivered again and again: {subject}",
    "slow-dependency": "consumers waiting on a slow downstream service: {subject}",
    "dependency-failure": "a downstream service is refusing or erroring: {subject}",
    "undersized-consumer-pool": "too few consumers for the load while resources are idle: {subject}",
    "queue-limit-reached": "queue limit reached, messages rejected or dropped: {subject}",
    "broker-resource-alarm": "the broker is throttling publishers: {subject}",
    "os-limit-reached": "an OS limit is reached: {subject}",
    "traffic-spike": "producers far above consumer capacity: {subject}",
    "partition-skew": "one partition carries the backlog: {subject}",
}


def _title(cause: str, subject: str) -> str:
    return "Possible root cause: " + TITLES[cause].format(subject=subject)


def _unique(items) -> list[str]:
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def steps(hits: list[Hit], snapshot: dict) -> list[dict[str, Any]]:
    statuses = {p.get("name"): p for p in snapshot.get("probes", [])}
    by_step: dict[int, list[Hit]] = {n: [] for n in STEPS}
    for hit in hits:
        by_step[hit.rule.step].append(hit)
    out = []
    for number, name in STEPS.items():
        found = sorted(by_step[number], key=lambda h: (-h.rule.weight * h.strength, h.rule.id, h.subject))
        findings = [{"rule": h.rule.id, "cause": h.rule.cause, "subject": h.subject, "text": h.evidence,
                     "strength": round(h.strength, 3)} for h in found]
        entry = {"number": number, "name": name, "findings": findings}
        if not findings:
            entry["note"] = _why_nothing(number, statuses)
        out.append(entry)
    return out


def _why_nothing(number: int, statuses: dict) -> str:
    sources = steps_fed(number)
    ran = [n for n in sources if statuses.get(n, {}).get("status") == "ok"]
    if ran:
        return "nothing found (looked at: " + ", ".join(ran) + ")"
    reasons = [f"{n}: {statuses[n].get('error') or statuses[n].get('status')}" for n in sources
               if n in statuses]
    return "skipped: no data" + (" (" + "; ".join(reasons) + ")" if reasons else "")


def assess(snapshot: dict, queues: list[dict], causes: list[dict], shared: dict | None = None,
           broken: list[dict] | None = None) -> dict[str, Any]:
    """_assess(), and rules that could not be evaluated: a run whose rules did
    not all run cannot be called healthy, and the reader is told which."""
    assessed = _assess(snapshot, queues, causes, shared)
    if broken:
        assessed["reasons"] = list(assessed["reasons"]) + [broken_rule_text(b) for b in broken]
        if assessed["verdict"] == "healthy":
            assessed["verdict"] = "unknown"
    return assessed


def _assess(snapshot: dict, queues: list[dict], causes: list[dict], shared: dict | None = None) -> dict[str, Any]:
    """The verdict and, when it is not plain, why: {"verdict", "reasons"}.

    healthy:  the queues in focus were measured over the window, every probe
              that ran answered, and nothing scored;
    unknown:  nothing was observed, a queue or group the user named was found on
              no broker probed, a queue in focus was not measured, or a probe
              failed, and no cause was found either: the engineer must not stop
              looking because qdiag saw nothing;
    critical: a queue in focus is full, rejecting, at risk, or backing up with
              no consumer, or its consumers are absent;
    degraded: otherwise, when something backs up or a cause scored."""
    shared = shared or {}
    probes = snapshot.get("probes", [])
    if not any(p.get("status") == "ok" for p in probes):
        return {"verdict": "unknown", "reasons": ["no probe produced data: " + "; ".join(
            f"{p.get('name')}: {p.get('error') or p.get('status')}" for p in probes) if probes else "no probe ran"]}
    # The queues the user named decide the verdict; the others are context.
    focus = {queue_subject(r): in_focus(r, snapshot) for r in queue_records(snapshot)}
    queues = [q for q in queues if focus.get(q.get("subject"), True)]
    causes = [c for c in causes if not c.get("out_of_focus")]
    backing = [q for q in queues if q.get("backing_up")]
    symptoms = shared.get("symptoms") or []
    for q in queues:
        status = str(q.get("status") or "").lower()
        fill = q.get("fill_ratio")
        if status in ("full", "rejecting") or (isinstance(fill, (int, float)) and fill >= 0.99) or q.get("data_at_risk"):
            return {"verdict": "critical", "reasons": []}
        if q.get("backing_up") and q.get("consumers") == 0:
            return {"verdict": "critical", "reasons": []}
    if any(c["id"] in ("consumers-absent", "queue-limit-reached") and c["score"] >= 0.6 for c in causes):
        return {"verdict": "critical", "reasons": []}
    if backing or symptoms or any(c["score"] >= SCORE_FLOOR for c in causes):
        return {"verdict": "degraded", "reasons": [_symptom_text(s) for s in symptoms]}
    reasons = _blind_spots(snapshot, queues)
    return {"verdict": "unknown" if reasons else "healthy", "reasons": reasons}


def _symptom_text(symptom: dict) -> str:
    where = f" (last at {symptom['where']})" if symptom.get("where") else ""
    return f"{symptom.get('count')} log line(s) say work is piling up: {symptom.get('id')}{where}"


def _blind_spots(snapshot: dict, queues_in_focus: list[dict]) -> list[str]:
    """What keeps a run that found nothing from calling the system healthy."""
    targets = (snapshot.get("settings") or {}).get("targets") or {}
    records = queue_records(snapshot)
    probes = snapshot.get("probes", [])
    reasons = []
    for pattern in targets.get("queues") or []:
        if not any(in_focus(r, {"settings": {"targets": {"queues": [pattern]}}}) for r in records):
            reasons.append(f"queue '{pattern}' was found on none of the brokers probed ({_brokers_probed(probes)}): "
                           "check the name, or give the broker it lives on")
    for group in targets.get("groups") or []:
        if not any(r.get("group") == group for r in records):
            reasons.append(f"group '{group}' was found on none of the brokers probed ({_brokers_probed(probes)}): "
                           "check the name")
    if not records:
        from qdiag.brokers import broker_flags

        reasons.append(f"no queue was observed: give the broker ({broker_flags()}) and --queue, "
                       "or the consumer (--pid/--process) and its --log")
    for q in queues_in_focus:
        if q.get("depth_settled") is False:
            why = q.get("depth_settled_why") or "the broker's figures had not settled"
            reasons.append(f"{q.get('subject')}: its depth is not a measurement of now ({why})")
        elif str(q.get("status") or "unknown") == "unknown":
            why = q.get("status_reason") or q.get("note") or "its figures were not settled over the window"
            reasons.append(f"{q.get('subject')} was not measured: {why}")
    for p in probes:
        if p.get("status") in ("error", "timeout"):
            reasons.append(f"the {p.get('name')} probe {'timed out' if p.get('status') == 'timeout' else 'failed'}: "
                           f"{p.get('error') or p.get('status')}")
    return reasons


def _brokers_probed(probes: list[dict]) -> str:
    from qdiag.brokers import BROKERS

    ran = [p.get("name") for p in probes if p.get("name") in BROKERS and p.get("status") == "ok"]
    return ", ".join(ran) or "none"
