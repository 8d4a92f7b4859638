"""What the process probe's observations mean to the diagnosis: the consumer
processes it measured (shared as `processes`), the busiest on the host
(`top_processes`), and one `process` subject per target."""

from __future__ import annotations

from qdiag.diagnosis.facts import Subject, num
from qdiag.probe import Contribution


def _share(obs: dict) -> dict:
    return {"processes": [t for t in obs.get("targets") or [] if isinstance(t, dict)],
            "top_processes": [p for p in obs.get("top_cpu") or [] if isinstance(p, dict)]}


def _subjects(obs: dict, joined):
    kills = joined.shared.get("oom_kills_recent") or []
    for target in joined.processes:
        pid = target.get("pid")
        killed = [k for k in kills if k.get("pid") == pid]
        listeners = [l for l in target.get("listening") or [] if num(l.get("fill_ratio")) is not None]
        yield Subject("process", f"process:{pid}", {
            **target, **joined.consumer_facts(pid),
            "oom_killed": killed[0] if killed else None,
            "fd_ratio": num((target.get("fds") or {}).get("ratio")),
            "fullest_listener": max(listeners, key=lambda l: l["fill_ratio"], default=None),
            **joined.cpu_facts(pid, num(target.get("cpu_percent"))),
        })


CONTRIBUTION = Contribution(steps=(2, 5), share=_share, subjects=_subjects)
