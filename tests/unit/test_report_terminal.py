"""The text report in a real terminal: tmux gives qdiag an 80x24 pseudo-terminal
and `capture-pane` reads back what a person would see.

On a terminal a report taller than the screen goes through the pager (less),
so the first screen is the top of the report: the verdict, the answer, the
queues in focus, the top cause and its first evidence line."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.cli_helper import run_cli

pytestmark = pytest.mark.live  # starts a tmux server and a real qdiag process on a pseudo-terminal

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO / "tests" / "fixtures" / "snapshots" / "v1-multi-queue-backlog.json.gz"
WAIT_S = 60  # a hang guard only: qdiag report takes well under a second


class Terminal:
    """A private tmux server with one 80x24 window running one command."""

    def __init__(self, tmp_path: Path, command: str, width: int = 80, height: int = 24):
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is not installed (bash tests/rig.sh installs it)", pytrace=False)
        self.base = [tmux, "-S", str(tmp_path / f"tmux-{uuid.uuid4().hex[:8]}.sock")]
        # The shell stays open after qdiag exits, so the screen can be read at leisure.
        subprocess.run([*self.base, "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t",
                        f"{command}; echo __EXIT=$?__; sleep {WAIT_S}"], check=True, timeout=30)

    def screen(self, escapes: bool = False) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p", *(["-e"] if escapes else []), "-t", "t"],
                              capture_output=True, text=True, check=True, timeout=30).stdout

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        pytest.fail(f"{text!r} never appeared on the terminal; last screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "t", *keys], check=True, timeout=30)

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=30)


def qdiag_command(*args: str, env: str = "") -> str:
    return (f"cd {shlex.quote(str(REPO))} && env PYTHONPATH={shlex.quote(str(REPO))} {env} "
            f"{shlex.quote(sys.executable)} -m qdiag " + " ".join(shlex.quote(a) for a in args))


@pytest.fixture
def terminal(tmp_path):
    opened = []

    def open_(command: str, **size) -> Terminal:
        opened.append(Terminal(tmp_path, command, **size))
        return opened[-1]

    yield open_
    for t in opened:
        t.close()


def top_cause() -> dict:
    report = json.loads(run_cli("report", SNAPSHOT, "--format", "json").out)
    assert len(report["queues"]) >= 4, "the fixture must be a backlog over several queues"
    return next(c for c in report["root_causes"] if not c.get("out_of_focus"))


def test_the_first_screen_on_80x24_is_the_answer(terminal):
    cause = top_cause()
    t = terminal(qdiag_command("report", str(SNAPSHOT)))
    screen = t.wait_for("CRITICAL")
    lines = screen.splitlines()
    assert lines[0].startswith("CRITICAL: "), screen
    headline = cause["title"].removeprefix("Possible root cause: ")
    assert any(line.startswith(f"1. {headline}") for line in lines), screen
    first_evidence = cause["evidence"][0].removeprefix(f"{cause['subject']}: ")
    measured = [line for line in lines if line.lstrip().startswith("measured")]
    assert measured and first_evidence[:40] in measured[0], screen
    assert "Queues in focus" in screen
    assert "__EXIT" not in screen  # the pager holds the report at its top, qdiag has not exited
    t.keys("q")
    assert "__EXIT=0__" in t.wait_for("__EXIT")


def test_colour_on_a_terminal_and_none_with_no_color(terminal):
    coloured = terminal(qdiag_command("report", str(SNAPSHOT), "--no-pager"), height=200)
    coloured.wait_for("__EXIT=0__")
    plain = terminal(qdiag_command("report", str(SNAPSHOT), "--no-pager", env="NO_COLOR=1"), height=200)
    plain.wait_for("__EXIT=0__")
    colour_codes = ("[31m", "[32m", "[33m", "[35m", "[36m", ";31m", ";32m", ";33m", ";35m", ";36m")
    assert any(code in coloured.screen(escapes=True) for code in colour_codes)
    assert not any(code in plain.screen(escapes=True) for code in colour_codes)


def test_box_drawing_on_a_terminal_and_plain_ascii_with_dash_dash_ascii(terminal):
    fancy = terminal(qdiag_command("report", str(SNAPSHOT), "--no-pager"), height=200)
    fancy.wait_for("__EXIT=0__")
    plain = terminal(qdiag_command("report", str(SNAPSHOT), "--no-pager", "--ascii"), height=200)
    plain.wait_for("__EXIT=0__")
    assert "─" in fancy.screen()
    assert all(ord(c) < 128 for c in plain.screen()), plain.screen()
