"""Inflow and outflow of a Redis job list over the window, from the list
alone and read-only.  Pure arithmetic; the probe feeds it what it read.

Producers push at one end of a job list and workers take from the other, and
every element is unique in the layouts qdiag knows (each carries a job id).
So: remember the newest element (the one at the push end) at one sample,
find it again at the next with `LPOS key element MAXLEN n` (searching from
the push end), and its distance from the push end is the number of jobs
pushed in between, exactly.  What left the list is then the pushes minus the
change in length.  Per layout:

    Celery/kombu, Sidekiq   LPUSH, workers BRPOP   push end: index 0
    RQ, Dramatiq            RPUSH, workers LPOP    push end: index -1

The count is a lower bound when the remembered element is gone (workers took
everything that was in the list, and perhaps more that came and went between
two samples), when there was none (the list was empty), or when it lies
further than MAXLEN from the push end.  A job put back at the consuming end
(kombu's restore of unacked messages, Sidekiq's requeue at shutdown) is
counted as negative outflow: the outflow is net of such returns.

For a plain list named with --queue the push end is not known: both ends are
remembered and the end whose element moved away from it is the push end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

HEAD, TAIL = 0, -1
# The end producers push at, per layout (None: not known, look at both ends).
PUSH_END = {"celery": HEAD, "sidekiq": HEAD, "rq": TAIL, "dramatiq": TAIL, "list": None}


def push_end(layout: str, consume_index: int | None) -> int | None:
    """The end producers push at: the layout's, else the end opposite the consuming one."""
    if layout in PUSH_END:
        return PUSH_END[layout]
    if consume_index is None:
        return None
    return TAIL if consume_index == HEAD else HEAD


def lpos_command(key: Any, element: bytes, end: int, maxlen: int, *, check_repeats: bool = False) -> tuple:
    """LPOS for `element`, searching from `end` (RANK -1 searches from the tail)
    and giving up after `maxlen` elements; the reply is the index from the head.

    check_repeats: ask for two matches (COUNT 2), for lists whose elements are
    not known to be unique; this scans up to `maxlen` elements every time."""
    cmd: tuple = ("LPOS", key, element) + (() if end == HEAD else ("RANK", -1))
    if check_repeats:
        cmd += ("COUNT", 2)
    return cmd + ("MAXLEN", int(maxlen))


def parse_lpos(reply: Any) -> dict[str, Any]:
    """LPOS reply -> {"pos": index from the head or None, "repeats": whether the
    element occurs more than once (known only when asked with COUNT)}."""
    if isinstance(reply, (list, tuple)):
        found = [int(v) for v in reply]
        return {"pos": found[0] if found else None, "repeats": len(found) > 1}
    return {"pos": None if reply is None else int(reply), "repeats": False}


@dataclass(frozen=True)
class Interval:
    """Jobs pushed and taken between two samples of one list.

    exact: both counts are exact; otherwise they are lower bounds.
    why: for inexact intervals, the reason in a few words."""

    pushed: int
    taken: int
    exact: bool
    why: str | None = None


def distance_from_end(pos: int, end: int, length: int) -> int:
    """How far index `pos` (from the head) lies from `end`, in a list of `length`."""
    return pos if end == HEAD else length - 1 - pos


def interval(before_len: int | None, anchor: bool, pos: int | None, after_len: int | None, end: int,
             maxlen: int) -> Interval | None:
    """One list between two samples.

    before_len: LLEN at the first sample; anchor: whether the list had an
    element at the push end then (remembered); pos: LPOS of that element at
    the second sample (None: not found); after_len: LLEN at the second sample.
    None when a length is unknown (the read failed)."""
    if before_len is None or after_len is None:
        return None
    growth = after_len - before_len
    if anchor and pos is not None:
        pushed = distance_from_end(pos, end, after_len)
        taken = pushed - growth
        if pushed < 0:  # LLEN and LPOS disagree: a command ran between the two reads
            return Interval(max(0, after_len - before_len), max(0, -growth), False, "reads not consistent")
        if taken < 0:
            # More came back at the consuming end than workers took (restored or
            # requeued jobs): the net outflow is negative; report none taken.
            return Interval(pushed, 0, True, None)
        return Interval(pushed, taken, True)
    # Every element now in the list may be new, and at least min(after, maxlen) are:
    # either the remembered one was taken (and with it everything older), or it
    # lies beyond MAXLEN from the push end.
    pushed = min(after_len, int(maxlen))
    taken = max(0, before_len + pushed - after_len)
    if not anchor:
        why = "the list was empty" if before_len == 0 else "the newest job was not kept (over 16 KB)"
    elif after_len > maxlen:
        why = f"more than {int(maxlen)} jobs pushed, or all taken"
    else:
        why = "workers took every job that was waiting"
    return Interval(pushed, taken, False, why)


def plain_interval(before_len: int | None, head: tuple[bool, int | None], tail: tuple[bool, int | None],
                   after_len: int | None, maxlen: int, *, repeats: bool = False) -> tuple[Interval | None, int | None]:
    """A list of unknown layout: both ends were remembered.  Returns (interval,
    the push end it shows, or None when it cannot be told).

    head/tail: (had an element there at the first sample, its LPOS at the second).
    repeats: one of the remembered elements occurs twice: jobs cannot be told apart."""
    if before_len is None or after_len is None:
        return None, None
    if repeats:
        return Interval(max(0, after_len - before_len), max(0, before_len - after_len), False,
                        "the same element occurs more than once, so jobs cannot be told apart"), None
    moved = {}
    for end, (anchor, pos) in ((HEAD, head), (TAIL, tail)):
        if anchor and pos is not None:
            moved[end] = distance_from_end(pos, end, after_len)
    head_moved, tail_moved = moved.get(HEAD), moved.get(TAIL)
    if head_moved and tail_moved:
        return Interval(0, 0, False, "elements added at both ends"), None
    if head_moved:
        return interval(before_len, True, head[1], after_len, HEAD, maxlen), HEAD
    if tail_moved:
        return interval(before_len, True, tail[1], after_len, TAIL, maxlen), TAIL
    if head_moved == 0 and tail_moved == 0:
        return interval(before_len, True, head[1], after_len, HEAD, maxlen), None  # nothing pushed, nothing taken
    # One end's element stayed where it was (nothing was pushed there) and the
    # other end's is gone: workers took from the other end, so this one is the
    # push end -- unless the list outgrew MAXLEN and the search gave up.
    if after_len <= maxlen:
        if head_moved == 0 and tail[0]:
            return interval(before_len, True, head[1], after_len, HEAD, maxlen), HEAD
        if tail_moved == 0 and head[0]:
            return interval(before_len, True, tail[1], after_len, TAIL, maxlen), TAIL
    return interval(before_len, head[0] or tail[0], None, after_len, HEAD, maxlen), None


@dataclass(frozen=True)
class Flow:
    """Inflow and outflow of one queue over the window (all its lists).

    rate_in / rate_out: msg/s, only when every interval was exact.
    rate_in_min / rate_out_min: msg/s, lower bounds, always when measured."""

    rate_in: float | None
    rate_out: float | None
    rate_in_min: float | None
    rate_out_min: float | None
    pushed: int | None
    taken: int | None
    exact: bool
    basis: str


def window_flow(intervals: Sequence[Sequence[Interval | None]], span_s: float, *, end_word: str) -> Flow | None:
    """intervals[i]: the intervals of each of the queue's lists between sample
    i and i+1.  None when nothing could be counted (no interval, or a length
    unknown)."""
    flat = [iv for step in intervals for iv in step]
    if not flat or span_s <= 0 or any(iv is None for iv in flat):
        return None
    pushed = sum(iv.pushed for iv in flat)
    taken = sum(iv.taken for iv in flat)
    exact = all(iv.exact for iv in flat)
    r_in, r_out = round(pushed / span_s, 3), round(taken / span_s, 3)
    if exact:
        basis = (f"exact: the newest job at each sample found again with LPOS from the {end_word}, its distance "
                 "from that end = jobs pushed; taken = pushed - depth change (net of jobs put back)")
        return Flow(r_in, r_out, r_in, r_out, pushed, taken, True, basis)
    reasons = sorted({iv.why for iv in flat if not iv.exact and iv.why})
    basis = (f"lower bounds only ({'; '.join(reasons)}): the newest job at a sample was not found again "
             "at the next, so jobs that came and went between two samples are not counted")
    return Flow(None, None, r_in, r_out, pushed, taken, False, basis)
