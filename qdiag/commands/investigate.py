"""qdiag investigate: snapshot then report, in one process (with --collect, the
consumer hosts' snapshots are taken at the same time and merged in)."""

from __future__ import annotations

from pathlib import Path

from qdiag import outputs, snapshot as snap
from qdiag.collect import anything_probed, collect, guard
from qdiag.config import Settings
from qdiag.environment import Environment
from qdiag.errors import NothingProbed
from qdiag.fleet.report import build_any
from qdiag.inputs import load_baseline, load_rules
from qdiag.report.emit import emit_report


def run(env: Environment, settings: Settings, argv: list[str], *, fmt: str, output: str | None,
        playbooks: list[str], baseline: str | None, save: str | None = None, fleet: dict | None = None) -> None:
    # Everything that can be wrong with the inputs and outputs fails now, not after minutes of probing.
    outputs.check_writable(output, "--output", "report.md")
    outputs.check_writable(save, "--snapshot", "incident.json.gz")
    # A --playbook file is read and checked before any probing; the built-in rules alone
    # are loaded in the window's idle time (about 50 ms of CPU otherwise spent before it).
    loaded: dict[str, list] = {"rules": load_rules(playbooks)} if playbooks else {}

    def load_builtin_rules() -> None:
        if "rules" not in loaded:
            loaded["rules"] = load_rules([])

    base = load_baseline(env, baseline)
    fleet = fleet or {}
    remote = None
    if fleet.get("collect"):
        from qdiag.fleet import remote as rm

        specs = [rm.parse_spec(value) for value in fleet["collect"]]
    # The remote hosts are given their connection's allowance beyond the --timeout.
    with guard(env.stderr, settings, beyond_s=rm.CONNECT_ALLOWANCE_S if fleet.get("collect") else 0.0):
        if fleet.get("collect"):
            # The targets start first: their windows then open about when this host's does.
            remote = rm.start(specs, settings, env.vars, command=fleet.get("command"),
                              kube_context=fleet.get("kube_context"), kube_container=fleet.get("kube_container"))
        doc = collect(settings, argv, progress=env.stderr if env.stderr_isatty else None,
                      color=env.color(env.stderr_isatty), while_waiting=load_builtin_rules)
        if remote is not None:
            from qdiag.fleet.merge import Taken, hostname, merge

            doc = merge([Taken(name=hostname(doc), doc=doc), *remote.finish()])
    if save:
        if outputs.is_stdout(save):
            outputs.write_bytes(env, save, snap.dumps(doc), mode=0o600, what="the snapshot")
        else:
            snap.save(doc, Path(save))
    load_builtin_rules()  # a no-op when the window already did it
    emit_report(env, build_any(doc, loaded["rules"], base), fmt, output)
    if not anything_probed(doc):
        raise NothingProbed("no probe produced data", "see the probe table above for why each one failed")
