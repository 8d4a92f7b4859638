"""A noisy neighbour: a CPU-bound batch job that shares the host with the consumers.

    python hog.py

Prints "ready", then spins on the CPU until killed.
"""

import hashlib
import signal
import sys


def crunch_report() -> None:
    digest = b"batch"
    while True:
        for _ in range(10000):
            digest = hashlib.sha256(digest).digest()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    crunch_report()
