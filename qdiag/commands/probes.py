"""qdiag probes: what each probe looks at, what it needs, its time allowance and its options."""

from __future__ import annotations

from qdiag.environment import Environment


def list_probes(env: Environment) -> None:
    from qdiag.options import COMMON
    from qdiag.probe import all_probes

    common = {o.name for o in COMMON}
    lines = []
    for probe in all_probes().values():
        needs = ", ".join(probe.needs) if probe.needs else "always"
        lines.append(f"{probe.name:<14} needs: {needs:<22} +{probe.timeout_s:g}s  {probe.description}")
        for option in probe.options.values():
            if option.name not in common:
                lines.append(f"    {option.describe()}")
    lines.append("")
    lines.append("Options go in [probes.NAME] tables of qdiag.toml; every probe also takes:")
    lines += [f"    {option.describe()}" for option in COMMON]
    env.stdout.write("\n".join(lines) + "\n")
