"""The README's Ansible way, run for real in the namespace lab (lab.py).  Not collected by
pytest: it needs root and `ansible` (ansible-core) on PATH, which the rig does not install.

    python -m venv /tmp/ansible && /tmp/ansible/bin/pip install ansible-core
    PY=$(command -v python); PATH=/tmp/ansible/bin:$PATH $PY tests/fleet/try_ansible.py

A consumer on web-1 deadlocks (web-2 runs none); the broker is a private Redis in
its own namespace, the producer and the controller in a third.  The same commands
as the README: copy the single file with the copy module, take the broker's
snapshot and every consumer host's at once (shell module), fetch them, and
`qdiag report` them together.  Prints the report; exits 1 unless the remote
deadlock is ranked first with its host named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fleet import lab as lab_module  # noqa: E402
from tests.fleet.lab import REPO, WORKLOADS  # noqa: E402


def main() -> int:
    ansible = shutil.which("ansible")
    why = lab_module.available() or (None if ansible else "ansible is not on PATH")
    if why:
        print(f"cannot run: {why}")
        return 2
    lab = lab_module.Lab()
    try:
        ops, broker = lab.node("ops"), lab.node("broker")
        web1, web2 = lab.node("web-1"), lab.node("web-2")
        for node in (web1, web2):
            lab.sshd(node)
        url = lab.redis(broker)
        work = lab.root / "ops"
        work.mkdir()
        (work / "inventory.ini").write_text("[consumers]\nweb-1\nweb-2\n")
        remote = lab.root / "remote"
        remote.mkdir()
        env = {**os.environ, "SCENARIO_REDIS": url, "PYTHONPATH": str(REPO),
               "ANSIBLE_SSH_ARGS": f"-F {lab.ssh_config()}", "ANSIBLE_LOCAL_TEMP": str(lab.root / "ansible-local"),
               "ANSIBLE_REMOTE_TEMP": str(lab.root / "ansible-remote"),
               "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}
        key = "qdiag-fleet-ansible"
        lab.run(ops, [sys.executable, "-c", f"import redis; redis.Redis.from_url({url!r}).xgroup_create({key!r}, "
                                            "'workers', id='0', mkstream=True)"], env=env)
        lab.start(ops, [sys.executable, str(WORKLOADS / "producer.py"), "redis-stream", key, "--rate", "40"], env=env)
        consumer = lab.start(web1, [sys.executable, str(WORKLOADS / "consumer.py"), "redis-stream", key, "--group",
                                    "workers", "--deadlock-after", "20"], env=env)
        time.sleep(6)
        subprocess.run([sys.executable, "-m", "qdiag.fleet.zipapp", "--no-fetch", "-o", str(work / "qdiag.pyz")],
                       cwd=REPO, check=True, capture_output=True)
        endpoint = url.split("//", 1)[1].rsplit("/", 1)[0]
        qdiag = f"{sys.executable} -m qdiag"
        here = "{{ inventory_hostname }}"
        # The README's commands; the lab's hosts share one file system, hence a file per host name.
        script = f"""set -e
cd {work}
ansible consumers -i inventory.ini -m copy -a 'src=qdiag.pyz dest={remote}/qdiag-{here}.pyz mode=0755'
{qdiag} snapshot --no-auto-detect --redis {url} --queue {key} --window 5 -o broker.json.gz &
ansible consumers -i inventory.ini -f 50 -m shell -a 'XDG_CACHE_HOME={lab.root}/cache python3 {remote}/qdiag-{here}.pyz snapshot --no-auto-detect --window 5 --connected-to {endpoint} -o {remote}/qdiag-{here}.json.gz'
wait
ansible consumers -i inventory.ini -m fetch -a 'src={remote}/qdiag-{here}.json.gz dest=snapshots/{here}.json.gz flat=yes'
{qdiag} report broker.json.gz snapshots/*.json.gz -f json > report.json
{qdiag} report broker.json.gz snapshots/*.json.gz
"""
        began = time.monotonic()
        done = lab.run(ops, ["bash", "-c", script], env=env, timeout=300)
        print(done.stdout.decode()[-8000:])
        if done.returncode != 0:
            print(done.stderr.decode()[-3000:])
            return 1
        import json

        report = json.loads((work / "report.json").read_text())
        top = (report["root_causes"] or [{}])[0]
        expected = ("consumer-stuck", f"process:web-1/{consumer.pid}")
        print(f"took {time.monotonic() - began:.1f}s; top cause {top.get('id')} @ {top.get('subject')}, "
              f"expected {expected[0]} @ {expected[1]}")
        return 0 if (top.get("id"), top.get("subject")) == expected else 1
    finally:
        lab.close()
        if lab.leftovers():
            print(f"left behind: {lab.leftovers()}")


if __name__ == "__main__":
    sys.exit(main())
