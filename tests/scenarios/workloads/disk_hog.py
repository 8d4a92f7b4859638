"""A disk-heavy neighbour (a backup, a log shipper, a compaction): rewrites a
256 MiB file with O_DIRECT, so every write goes to the disk, for ever.  The
file never grows and is removed on SIGTERM.

    python disk_hog.py /var/tmp/somefile

Prints "ready", then writes until stopped.
"""

import mmap
import os
import signal
import sys

REGION = 256 << 20
BLOCK = 1 << 20


def main() -> None:
    path = sys.argv[1]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)

    def stop(*_):
        os.close(fd)
        os.unlink(path)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    block = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    block.write(os.urandom(BLOCK))
    print("ready", flush=True)
    while True:
        for offset in range(0, REGION, BLOCK):
            os.pwrite(fd, block, offset)


if __name__ == "__main__":
    main()
