"""The package list in pyproject.toml is written by hand (probes/ and playbooks/
are mapped into the qdiag namespace); this keeps it complete."""

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qdiag").rglob("__init__.py")}
    found |= {"qdiag.probes", "qdiag.playbooks"}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["qdiag.probes"] == "probes"
    assert config["package-dir"]["qdiag.playbooks"] == "playbooks"
