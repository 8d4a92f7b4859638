"""Remote collection, our side of it: parsing --collect, the argument lists
given to ssh and kubectl, streaming snapshots back, per-target failures and the
deadline.

No Kubernetes cluster runs here, so kubectl is a fake on the command line
(QDIAG_KUBECTL): a script that logs its arguments, lists pods from a variable
and, for `exec POD -- CMD...`, runs CMD on this machine.  That tests what qdiag
asks of kubectl and what it does with the answers, not kubectl or a cluster."""

from __future__ import annotations

import json
import shlex
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from qdiag.config import resolve
from qdiag.errors import UsageError
from qdiag.fleet import remote
from tests.cli_helper import run_cli
from tests.fleet.lab import REPO

FAKE_KUBECTL = textwrap.dedent('''\
    #!/usr/bin/env python3
    """A stand-in for kubectl: logs its argv, lists $FAKE_PODS, runs `exec POD -- CMD` here."""
    import json, os, sys, time
    args = sys.argv[1:]
    with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    if "get" in args:
        if os.environ.get("FAKE_KUBECTL_DENY"):
            sys.stderr.write('Error from server (Forbidden): pods is forbidden: User "u" cannot list resource '
                             '"pods" in API group "" in the namespace "shop"\\n')
            sys.exit(1)
        print("\\n".join(os.environ.get("FAKE_PODS", "").split()))
        sys.exit(0)
    pod = args[args.index("exec") + 1]
    command = args[args.index("--") + 1:]
    if pod.startswith("gone"):
        sys.stderr.write(f'Error from server (NotFound): pods "{pod}" not found\\n')
        sys.exit(1)
    if pod.startswith("slow"):
        time.sleep(600)
    os.execvp(command[0], command)
    ''')


@pytest.fixture
def kubectl(tmp_path, monkeypatch):
    path = tmp_path / "kubectl"
    path.write_text(FAKE_KUBECTL)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "kubectl.log"
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(log))
    monkeypatch.setenv("QDIAG_KUBECTL", str(path))
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


LOCAL_QDIAG = f"{shlex.quote(sys.executable)} -m qdiag"


def test_collect_values_are_parsed_and_bad_ones_say_how_to_write_them():
    assert remote.parse_spec("ssh://web-1,ops@web-2:2222").hosts == ("web-1", "ops@web-2:2222")
    spec = remote.parse_spec("kubectl://shop/app=worker,tier!=canary")
    assert (spec.namespace, spec.selector) == ("shop", "app=worker,tier!=canary")
    for bad in ("ftp://x", "ssh://", "ssh://web-1;reboot", "ssh://-oProxyCommand=x", "kubectl://shop",
                "kubectl://-n/x", "ssh://web-1:99999"):
        with pytest.raises(UsageError):
            remote.parse_spec(bad)


def test_ssh_argv_is_batch_mode_with_the_users_own_config_and_quoted_arguments():
    settings = resolve({"redis": "redis://mq.internal:6379/0", "processes": ["worker --queue 'a b'"], "window": 4,
                        "timeout": 20}, env={})
    args = remote.snapshot_args(settings)
    assert args[:6] == ["snapshot", "-o", "-", "--no-auto-detect", "--window", "4"]
    assert ["--connected-to", "mq.internal:6379"] == args[args.index("--connected-to"):][:2]
    [job] = remote.ssh_jobs(remote.parse_spec("ssh://ops@web-1:2222"), ["python3", "~/qdiag.pyz"], args,
                            {"QDIAG_SSH_COMMAND": "ssh -F /etc/incident_ssh_config"})
    assert job.argv[:3] == ["ssh", "-F", "/etc/incident_ssh_config"]
    assert "BatchMode=yes" in job.argv and job.argv[job.argv.index("-p") + 1] == "2222"
    assert job.argv[-2] == "ops@web-1" and job.name == "web-1"
    # The remote shell sees the user's command as written (~ expands there) and qdiag's arguments quoted.
    assert job.argv[-1].startswith("python3 ~/qdiag.pyz snapshot -o - ")
    assert shlex.split(job.argv[-1])[2:] == args
    assert job.access == "ssh -F /etc/incident_ssh_config -p 2222 ops@web-1"
    # No credential goes to the consumer hosts.
    settings = resolve({"rabbitmq": "http://admin:s3cret@mq:15672"}, env={})
    assert "s3cret" not in " ".join(remote.snapshot_args(settings))


def test_failures_are_explained_in_a_line_the_user_can_act_on():
    assert "unreachable over ssh" in remote.explain("ssh", 255, "ssh: connect to host 10.0.0.9 port 22: No route")
    assert "refused the login" in remote.explain("ssh", 255, "root@web-1: Permission denied (publickey).")
    assert "not installed there" in remote.explain("ssh", 127, "bash: line 1: qdiag: command not found")
    assert "pods/exec" in remote.explain("kubectl", 1, 'Error from server (Forbidden): pods "w" is forbidden')


def test_kubectl_pods_are_listed_then_each_runs_the_snapshot_and_streams_it_back(kubectl, monkeypatch):
    monkeypatch.setenv("FAKE_PODS", "worker-a worker-b gone-c")
    r = run_cli("investigate", "-f", "json", "--no-auto-detect", "--window", "1", "--timeout", "20",
                "--probe", "host", "--redis", "redis://10.9.9.9:6379/0",
                "--collect", "kubectl://shop/app=worker", "--kube-context", "prod-eu", "--kube-container", "app",
                "--collect-command", LOCAL_QDIAG)
    assert r.code == 0, r.err
    report = r.json()
    calls = _calls(kubectl)
    listing = next(c for c in calls if "get" in c)
    assert listing[:4] == ["--context", "prod-eu", "--namespace", "shop"]
    assert listing[listing.index("--selector") + 1] == "app=worker"
    execs = {c[c.index("exec") + 1]: c for c in calls if "exec" in c}
    assert set(execs) == {"worker-a", "worker-b", "gone-c"}
    a = execs["worker-a"]
    assert a[:6] == ["--context", "prod-eu", "--namespace", "shop", "exec", "worker-a"]
    assert a[a.index("--container") + 1] == "app"
    after = a[a.index("--") + 1:]
    assert after[:3] == [sys.executable, "-m", "qdiag"] and after[3:6] == ["snapshot", "-o", "-"]
    assert after[after.index("--connected-to") + 1] == "10.9.9.9:6379"
    hosts = {h["name"]: h for h in report["fleet"]["hosts"]}
    assert hosts["worker-a"]["status"] == hosts["worker-b"]["status"] == "ok"
    assert hosts["worker-a"]["target"] == "kubectl://shop/worker-a"
    assert hosts["gone-c"]["status"] == "failed" and "NotFound" in hosts["gone-c"]["error"]
    assert any("gone-c" in reason for reason in report["verdict_reasons"])


def test_kubectl_refusing_to_list_pods_is_reported_and_the_run_goes_on(kubectl, monkeypatch):
    monkeypatch.setenv("FAKE_KUBECTL_DENY", "1")
    r = run_cli("investigate", "-f", "json", "--no-auto-detect", "--window", "1", "--probe", "host",
                "--collect", "kubectl://shop/app=worker", "--collect-command", LOCAL_QDIAG)
    assert r.code == 0, r.err
    [failed] = [h for h in r.json()["fleet"]["hosts"] if not h["primary"]]
    assert "pods/exec" in failed["error"] and "Forbidden" in failed["error"]


@pytest.mark.live
def test_a_target_that_never_answers_is_killed_at_the_deadline(kubectl, monkeypatch):
    monkeypatch.setenv("FAKE_PODS", "slow-1")
    monkeypatch.setattr(remote, "CONNECT_ALLOWANCE_S", 1.0)
    import time

    began = time.monotonic()
    r = run_cli("investigate", "-f", "json", "--no-auto-detect", "--window", "1", "--timeout", "3", "--probe", "host",
                "--collect", "kubectl://shop/app=worker", "--collect-command", LOCAL_QDIAG)
    took = time.monotonic() - began
    assert r.code == 0, r.err
    [slow] = [h for h in r.json()["fleet"]["hosts"] if not h["primary"]]
    assert "before the deadline" in slow["error"]
    assert took < 30, f"the deadline did not hold: {took:.0f}s"  # a wide hang guard, not a timing test


def test_something_that_is_not_a_snapshot_is_said_so(tmp_path):
    job = remote.Job(name="odd", target="ssh://odd", argv=[sys.executable, "-c", "print('hello')"], access="ssh odd")
    import time

    taken = remote.run_job(job, "ssh", time.monotonic() + 30)
    assert taken.doc is None and "did not send a snapshot" in taken.error
