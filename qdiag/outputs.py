"""Where a command's output goes: standard output (no path, or `-`) or a path
(a file, or a device or FIFO written through: see qdiag/snapshot.py's write_atomic).

Every output path a command was given is checked before any probe runs, so a
typo costs a one-line error, not a whole run followed by a failed write.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

from qdiag.environment import Environment
from qdiag.errors import UsageError
from qdiag.snapshot import OutputRefused, inspect_output, write_atomic

STDOUT = "-"


def is_stdout(path: str | None) -> bool:
    return path is None or path == STDOUT


def check_writable(path: str | None, option: str, example: str) -> None:
    """Raise a UsageError naming `option` when a file could not be written at `path`.

    How each kind of path is written (a new file, an existing file replaced
    keeping its owner and mode, a device or FIFO written through) is decided in
    qdiag/snapshot.py's write_atomic(); this checks the same rules up front."""
    if is_stdout(path):
        return
    target = Path(path)
    try:
        existing = inspect_output(target)
    except OutputRefused as exc:
        hint = f"give a file name, e.g. {option} {example}" if exc.problem == "is a directory" else exc.hint
        raise UsageError(f"{option} {path} {exc.problem}", hint) from None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        return  # written through: /dev/null, a terminal, a FIFO
    # A regular file is replaced by a rename in the directory it is in (for a symlink, the file it points to).
    real = Path(os.path.realpath(target)) if existing is not None else target
    parent = real.parent if str(real.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"{option} {path}: directory {parent} does not exist", "create it or choose another path")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is not a directory", "choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: directory {parent} is not writable"
                         + (" (the file is replaced by a rename there)" if existing is not None else ""),
                         "check its permissions or choose another path")


def write_text(env: Environment, path: str | None, text: str) -> None:
    """`text` to the file at `path` (atomically), or to stdout, through a pager when it is taller than the terminal."""
    if not is_stdout(path):
        write_atomic(Path(path), text.encode("utf-8"), mode=0o644)
        return
    if env.stdout_isatty and env.pager and text.count("\n") >= env.height() and _page(env, text):
        return
    env.stdout.write(text)
    env.stdout.flush()


def write_bytes(env: Environment, path: str | None, data: bytes, *, mode: int, what: str) -> None:
    """Binary output (a gzip snapshot) to a file, or to stdout when it is not a terminal."""
    if not is_stdout(path):
        write_atomic(Path(path), data, mode=mode, binary=True)
        return
    binary = env.stdout_bytes
    if env.stdout_isatty or binary is None:
        raise UsageError(f"refusing to write {what} (binary) to a terminal", "redirect it: ... -o - > FILE, or give -o FILE")
    env.stdout.flush()
    binary.write(data)
    binary.flush()


def pager_command(env: Environment) -> list[str] | None:
    """QDIAG_PAGER, else PAGER, else less; None when paging is turned off (empty or `cat`) or not installed."""
    chosen = env.vars.get("QDIAG_PAGER")
    if chosen is None:
        chosen = env.vars.get("PAGER")
    if chosen is None:
        chosen = "less"
    argv = shlex.split(chosen)
    if not argv or argv[0] == "cat" or shutil.which(argv[0]) is None:
        return None
    return argv


def _page(env: Environment, text: str) -> bool:
    """Show `text` in the pager, so that its first screen is what the reader sees; False when there is none."""
    argv = pager_command(env)
    if argv is None:
        return False
    child_env = dict(env.vars)
    # less: quit at once when it fits (-F), keep colours (-R), leave the text on screen on exit (-X).
    child_env.setdefault("LESS", "FRX")
    child_env.setdefault("LV", "-c")
    env.stdout.flush()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=env.stdout, env=child_env)
    except OSError:
        return False
    try:
        proc.stdin.write(text.encode("utf-8"))
        proc.stdin.close()
    except BrokenPipeError:  # the reader quit the pager early
        pass
    while True:
        try:
            proc.wait()
            return True
        except KeyboardInterrupt:  # Ctrl-C belongs to the pager (less uses it to stop a search)
            continue
