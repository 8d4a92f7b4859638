"""What the dependency probe's timings mean to the diagnosis: the endpoints
(shared, for the core to join thread waits with), one `dependency` subject each."""

from __future__ import annotations

from qdiag.diagnosis.facts import Subject, num
from qdiag.probe import Contribution


def _endpoints(obs: dict) -> list[dict]:
    return [e for e in obs.get("endpoints") or [] if isinstance(e, dict)]


def _share(obs: dict) -> dict:
    return {"endpoints": _endpoints(obs)}


def _subjects(obs: dict, joined):
    waiting: dict[str, list] = {}
    for pid, wait in joined.waiting_on.items():
        waiting.setdefault(wait["url"], []).append(pid)
    for endpoint in _endpoints(obs):
        latency = endpoint.get("latency_ms") or {}
        total, ttfb = latency.get("total") or {}, latency.get("ttfb") or {}
        kinds = endpoint.get("error_kinds") or {}
        yield Subject("dependency", f"dependency:{endpoint.get('url')}", {
            **endpoint,
            "p50_ms": num(total.get("p50")), "p95_ms": num(total.get("p95")), "max_ms": num(total.get("max")),
            "ttfb_p50_ms": num(ttfb.get("p50")),
            "error_summary": ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) or "none",
            "status_summary": ", ".join(f"HTTP {k} x{v}" for k, v in sorted((endpoint.get("statuses") or {}).items()))
            or "none",
            "refused": num(kinds.get("refused")) or 0,
            "http_5xx": num(kinds.get("http_5xx")) or 0,
            "waiting_pids": waiting.get(endpoint.get("url"), []),
            "consumers_wait_here": bool(waiting.get(endpoint.get("url"))),
        })


CONTRIBUTION = Contribution(steps=(4,), share=_share, subjects=_subjects)
