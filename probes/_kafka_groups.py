"""A consumer group's membership over the window, from its description at each
offset sample: pure logic, no client, no clock.

What DescribeGroups says (classic groups): the group's state and its members
(member id, client id, client host, assignment).  It does not carry the
generation: a member reports the generation it last held only inside its
subscription metadata, and only from ConsumerProtocolSubscription v2 on (the
Java client sends it, kafka-python does not).  So rebalances are counted from
what changes between two descriptions, which gives a lower bound:

- the set of member ids changed: someone joined or left, and the coordinator
  rebalanced (a member that rejoins after leaving gets a new member id: clients
  reset it when they leave, KIP-394 hands a fresh one on every first join);
- the group entered PreparingRebalance / CompletingRebalance (KIP-848:
  Assigning / Reconciling);
- a member kept its id but its assignment changed.

Why members leave and come back matters: a member whose processing between
two poll() calls exceeds max.poll.interval.ms is made to leave by its own
heartbeat thread, its uncommitted batch goes to the others, and its next
poll() rejoins under a new member id (a rebalance storm when every batch is
that slow).  A member whose process died stays listed until its
session.timeout.ms passes, then leaves for good.
"""

from __future__ import annotations

from typing import Any

REBALANCING = frozenset({"preparingrebalance", "completingrebalance", "assigning", "reconciling"})


def rebalancing(state: Any) -> bool:
    return str(state or "").lower() in REBALANCING


def _member_ids(description: dict) -> set[str]:
    return {m.get("member_id") for m in description.get("members") or [] if m.get("member_id")}


def _assignments(description: dict) -> dict[str, Any]:
    return {m.get("member_id"): m.get("assignment") for m in description.get("members") or []}


def _distinct(values: list) -> list:
    """Values in order with consecutive repeats dropped: [Stable, Stable, Empty, Stable] -> [Stable, Empty, Stable]."""
    out: list = []
    for value in values:
        if not out or out[-1] != value:
            out.append(value)
    return out


def membership(gid: str, samples: list[dict]) -> dict:
    """What the group's descriptions at the samples show about its membership:

    group_samples      descriptions read (samples whose DescribeGroups answered for it)
    states_seen        states in order, repeats dropped
    rebalancing_samples  samples taken while the group was rebalancing
    members_joined / members_left  member ids that appeared / disappeared between samples
    rejoined_clients   "client@host" seen under more member ids over the window than it
                       ever had at once: the same client left and came back
    rebalances_seen    the number of rebalances the descriptions prove, at least (see the module)
    generation         the highest generation a member reported in its subscription, or None
    """
    seen = [s["groups"][gid] for s in samples
            if isinstance(s.get("groups"), dict) and isinstance(s["groups"].get(gid), dict)
            and not s["groups"][gid].get("error")]
    out: dict[str, Any] = {"group_samples": len(seen)}
    if not seen:
        return {**out, "states_seen": [], "rebalancing_samples": None, "members_joined": None,
                "members_left": None, "rejoined_clients": None, "rebalances_seen": None, "generation": None}
    joined: list[str] = []
    left: list[str] = []
    rebalances = 1 if rebalancing(seen[0].get("state")) else 0
    for before, after in zip(seen, seen[1:]):
        ids_before, ids_after = _member_ids(before), _member_ids(after)
        came, went = sorted(ids_after - ids_before), sorted(ids_before - ids_after)
        joined.extend(m for m in came if m not in joined)
        left.extend(m for m in went if m not in left)
        entered = rebalancing(after.get("state")) and not rebalancing(before.get("state"))
        reassigned = False
        if not came and not went and not rebalancing(before.get("state")) and not rebalancing(after.get("state")):
            a, b = _assignments(before), _assignments(after)
            reassigned = any(a.get(m) is not None and b.get(m) is not None and a[m] != b[m] for m in a)
        if came or went or entered or reassigned:
            rebalances += 1
    # Several instances of one service often share a client id and a host: a
    # client "rejoined" only when it shows more member ids over the window than
    # it ever had at once.
    identities: dict[tuple, set] = {}
    at_once: dict[tuple, int] = {}
    generations = []
    for description in seen:
        count: dict[tuple, int] = {}
        for m in description.get("members") or []:
            key = (m.get("client_id"), m.get("host"))
            identities.setdefault(key, set()).add(m.get("member_id"))
            count[key] = count.get(key, 0) + 1
            if isinstance(m.get("generation"), int) and m["generation"] >= 0:
                generations.append(m["generation"])
        for key, n in count.items():
            at_once[key] = max(at_once.get(key, 0), n)
    out.update({
        "states_seen": _distinct([d.get("state") for d in seen]),
        "rebalancing_samples": sum(1 for d in seen if rebalancing(d.get("state"))),
        "members_joined": joined,
        "members_left": left,
        "rejoined_clients": sorted(f"{cid}@{str(host or '?').lstrip('/')}" for (cid, host), ids in identities.items()
                                   if len(ids) > at_once.get((cid, host), 0)),
        "rebalances_seen": rebalances,
        "generation": max(generations) if generations else None,
    })
    return out


def sample_entry(description: dict) -> dict:
    """The part of one DescribeGroups answer kept per sample (small: no subscriptions)."""
    if description.get("error") and description.get("members") is None:
        return {"error": description["error"]}
    return {"state": description.get("state"),
            "members": [{k: m.get(k) for k in ("member_id", "client_id", "host", "assignment", "generation")}
                        for m in description.get("members") or []]}
