"""Bounded reads of /proc for the process probe and the kernel wait sampler.
Errors are raised as OSError (ENOENT/ESRCH: the process or thread is gone;
EACCES/EPERM: not ours to read), so each caller decides what they mean."""

from __future__ import annotations

import os

SMALL_FILE = 4096  # a per-thread file (stat, syscall, wchan, schedstat) is one short line


def read_proc(path: str, limit: int = SMALL_FILE) -> str:
    """A /proc file, whole up to `limit` bytes.  The per-thread files are one
    short line, got in one read(); tables are read on to their end."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunk = os.read(fd, min(65536, limit))
        if limit <= SMALL_FILE or not chunk:
            return chunk.decode("utf-8", "replace")
        chunks, size = [chunk], len(chunk)
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def socket_inodes(proc_root: str, pid: int, limit: int) -> tuple[int, set[int]]:
    """(open fd count, inodes of its sockets) from /proc/<pid>/fd, reading at most
    `limit` links.  Raises OSError when the fd directory cannot be listed."""
    fd_dir = f"{proc_root}/{pid}/fd"
    names = os.listdir(fd_dir)
    inodes = set()
    for name in names[:limit]:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:  # closed since the listing
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return len(names), inodes
