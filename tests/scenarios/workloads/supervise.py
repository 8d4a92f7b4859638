"""A minimal process supervisor (what systemd's Restart=always or a container
runtime does): runs a command, and runs it again whenever it exits.

    python supervise.py -- python consumer.py redis-list jobs --leak-mb 2

Prints "ready" once the first child printed "ready", then "exit CODE" for every
child that ends.  Stopping the supervisor (SIGTERM) stops the child too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time


def main() -> None:
    cmd = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    child: list[subprocess.Popen] = []

    def stop(*_):
        if child and child[0].poll() is None:
            child[0].kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    announced = False
    while True:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        child[:] = [proc]
        ready = threading.Event()

        def pump(p=proc, ev=ready):
            for line in p.stdout:
                if line.startswith("ready"):
                    ev.set()

        threading.Thread(target=pump, daemon=True).start()
        if not announced and ready.wait(30):
            print("ready", flush=True)
            announced = True
        code = proc.wait()
        print(f"exit {code}", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
