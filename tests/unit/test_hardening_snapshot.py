"""Issue 13 #6: the snapshot loader has limits.  A snapshot is data from
elsewhere (a ticket, another host): a gzip bomb, a device, a FIFO, deep
nesting, a strange schema number or a field of the wrong type must each end in
one line naming the problem (exit 3), never in exhausted memory, a hang or a
traceback.

The property-based tests run a modest number of examples by default; a longer
run is one command:

    QDIAG_FUZZ_EXAMPLES=5000 python -m pytest tests/unit/test_hardening_snapshot.py -q
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qdiag import inputs, snapshot
from qdiag.errors import SnapshotError
from qdiag.report import render
from qdiag.report.build import build_report
from tests.cli_helper import fake_environment, run_cli, run_qdiag_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
CASES = ("v1-host-only", "v1-multi-queue-backlog", "v1-rabbitmq-redis-backlog")
# Read when the module is imported (the autouse fixture later clears QDIAG_* variables).
EXAMPLES = int(os.environ.get("QDIAG_FUZZ_EXAMPLES") or 40)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_GUARD_S = 60


def fixture_doc(case: str) -> dict:
    return snapshot.load(FIXTURES / f"{case}.json.gz")


def minimal_doc(**over) -> dict:
    doc = {"schema": "qdiag.snapshot/1", "created_at": "2026-01-01T00:00:00Z", "window_s": 1.0,
           "host": {"hostname": "h"}, "probes": []}
    doc.update(over)
    return doc


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


# --------------------------------------------------------------------------- size


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    """300 MB of JSON whitespace around a valid snapshot compresses to ~300 KB; it
    must be refused at the decompression cap, and the process stays small."""
    bomb = tmp_path / "bomb.json.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(b'{"schema": "qdiag.snapshot/1", "x": "')
        out.write(b'"')
        blank = b" " * (1 << 20)
        for _ in range(300):
            out.write(blank)
        out.write(json.dumps(minimal_doc())[1:].encode())
        out.write(b"}")
    assert bomb.stat().st_size < 2 << 20
    probe = ("import resource, sys\n"
             "from qdiag import snapshot\n"
             "try:\n    snapshot.load(sys.argv[1])\n"
             "except snapshot.SnapshotError as exc:\n    print(exc.message)\n"
             "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n")
    run = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    message, peak_kib = run.stdout.strip().splitlines()
    assert "decompresses to more than 64 MiB" in message
    # The cap (64 MiB) plus the interpreter; inflating the whole file took 600 MB+.  VmHWM is this
    # process image's own peak: ru_maxrss would also count the forking parent's (pytest's) size.
    assert int(peak_kib) < 220 * 1024


def test_a_large_plain_file_is_refused_by_its_size(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as out:
        out.truncate(snapshot.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(SnapshotError, match="more than a snapshot can be"):
        snapshot.load(big)


def test_standard_input_is_capped_too():
    flood = b" " * (snapshot.MAX_FILE_BYTES + 1)
    result = run_cli("report", "-", stdin=flood)
    assert result.code == 3
    assert "standard input: more than 64 MiB" in result.err


def test_a_gzip_bomb_on_standard_input_is_refused():
    bomb = gzip.compress(b" " * (snapshot.MAX_JSON_BYTES + (1 << 20)), compresslevel=1)
    result = run_cli("report", "-", stdin=bomb)
    assert result.code == 3
    assert "standard input: decompresses to more than" in result.err


def test_a_snapshot_on_standard_input_still_reports():
    data = (FIXTURES / "v1-host-only.json.gz").read_bytes()
    result = run_cli("report", "-", "--format", "json", stdin=data)
    assert result.code == 0, result.err
    assert result.json()["schema"] == "qdiag.report/1"


# --------------------------------------------------------------------------- not files


def test_a_device_is_refused_at_once():
    run = run_qdiag_process("report", "/dev/zero", timeout=HANG_GUARD_S)
    assert run.returncode == 3
    assert "/dev/zero: not a regular file" in run.stderr


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    run = run_qdiag_process("report", fifo, timeout=HANG_GUARD_S)
    assert run.returncode == 3
    assert f"{fifo}: not a regular file" in run.stderr


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(SnapshotError, match="a directory"):
        snapshot.load(tmp_path)


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("levels", [snapshot.MAX_DEPTH + 1, 2000, 200_000])
def test_deep_nesting_is_one_clear_error(tmp_path, levels):
    text = '{"schema": "qdiag.snapshot/1", "x": ' + "[" * levels + "]" * levels + "}"
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(SnapshotError, match=f"nested deeper than {snapshot.MAX_DEPTH} levels"):
        snapshot.load(path)


def test_nesting_of_a_real_snapshot_is_far_below_the_limit():
    for case in CASES:
        assert not snapshot._depth_exceeds(fixture_doc(case), snapshot.MAX_DEPTH // 3)


@pytest.mark.parametrize("schema", ["qdiag.snapshot/0", "qdiag.snapshot/-1", "qdiag.snapshot/ 1",
                                    "qdiag.snapshot/1.0", "qdiag.snapshot/+1", "qdiag.snapshot/01",
                                    "qdiag.snapshot/", "qdiag.snapshot/1_0", "qdiag.snapshot/" + "9" * 5000])
def test_schema_numbers_that_are_not_versions(tmp_path, schema):
    path = write_json(tmp_path / "s.json", minimal_doc(schema=schema))
    with pytest.raises(SnapshotError, match="unreadable schema"):
        snapshot.load(path)


def test_a_huge_integer_is_a_decode_error(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"schema": "qdiag.snapshot/1", "window_s": ' + "9" * 5000 + "}")
    with pytest.raises(SnapshotError, match="cannot decode"):
        snapshot.load(path)


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(host="web-1"), "'host' must be an object (found a string)"),
    (lambda d: d.update(window_s="5"), "'window_s' must be a non-negative number"),
    (lambda d: d.update(window_s=-1), "'window_s' must be a non-negative number"),
    (lambda d: d.update(command="qdiag investigate"), "'command' must be an array of strings"),
    (lambda d: d.update(command=["qdiag", 5]), "'command[1]' must be a string (found the number 5)"),
    (lambda d: d.update(probes={"host": {}}), "'probes' must be an array of objects"),
    (lambda d: d["probes"].append("host"), "'probes[1]' must be an object"),
    (lambda d: d["probes"][0].update(status=None), "'probes[0].status' must be a string (found null)"),
    (lambda d: d["probes"][0].update(observations=[]), "'probes[0].observations' must be an object"),
    (lambda d: d["probes"][0].update(duration_s=float("nan")), "'probes[0].duration_s' must be a non-negative"),
    (lambda d: d.update(settings={"targets": {"queues": "orders"}}), "'settings.targets.queues' must be an array"),
    (lambda d: d.update(discovered=[1]), "'discovered[0]' must be an object"),
    (lambda d: d["host"].update(hostname=["a"]), "'host.hostname' must be a string or null"),
])
def test_wrong_field_types_are_named(tmp_path, change, field):
    doc = minimal_doc(probes=[{"name": "host", "status": "ok", "observations": {}}])
    change(doc)
    path = write_json(tmp_path / "s.json", doc)
    result = run_cli("report", path)
    assert result.code == 3
    assert field in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_an_observation_the_report_cannot_read_is_named_by_its_path(tmp_path):
    doc = fixture_doc("v1-rabbitmq-redis-backlog")
    index = next(i for i, p in enumerate(doc["probes"]) if p["name"] == "rabbitmq")
    doc["probes"][index]["observations"]["queues"][0]["status"] = {"not": "a word"}
    result = run_cli("report", write_json(tmp_path / "s.json", doc))
    assert result.code == 3, result.out
    assert f"'probes[{index}].observations.queues[0]' (the rabbitmq probe)" in result.err


def test_a_damaged_baseline_is_named_too(tmp_path):
    good = FIXTURES / "v1-host-only.json.gz"
    doc = fixture_doc("v1-host-only")
    host = next(p for p in doc["probes"] if p["name"] == "host")
    host["observations"]["network"] = "down"
    result = run_cli("report", good, "--baseline", write_json(tmp_path / "b.json", doc))
    assert result.code == 3
    assert "b.json: snapshot field 'probes[" in result.err and "observations.network' (the host probe)" in result.err


# --------------------------------------------------------------------------- properties


def _load_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    try:
        doc = snapshot.load(path)
    except SnapshotError:
        return
    inputs.check_readable(doc, str(path))


@FUZZ
@given(data=st.binary(max_size=4096))
def test_any_bytes_load_or_are_refused(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("fuzz")
    try:
        _load_bytes(tmp, data)
        _load_bytes(tmp, gzip.compress(data))
    except SnapshotError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30)


@FUZZ
@given(extra=st.dictionaries(st.sampled_from(["schema", "created_at", "window_s", "host", "probes", "command",
                                               "settings", "discovered", "versions", "qdiag_version"]), JSON))
def test_any_envelope_loads_or_is_refused(extra):
    doc = minimal_doc(**extra)
    try:
        loaded = snapshot.upgrade(json.loads(json.dumps(doc)))
        inputs.check_readable(loaded, "fuzz")
    except SnapshotError:
        return
    _report_all_formats(loaded)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


DOCS = {case: fixture_doc(case) for case in CASES}
PATHS = {case: [p for p in _paths(doc) if p] for case, doc in DOCS.items()}
RULES = inputs.load_rules([])


def _report_all_formats(doc: dict) -> None:
    report = build_report(doc, RULES)
    render.render_json(report)
    render.render_markdown(report)
    render.render_text(report, color=False, unicode=True, width=100)


@FUZZ
@given(case=st.sampled_from(CASES), data=st.data())
def test_a_snapshot_with_any_value_replaced_reports_or_is_refused(case, data):
    """The property behind every item above: whatever one value of a real
    snapshot is replaced by, reading it ends in a report or in a SnapshotError."""
    doc = copy.deepcopy(DOCS[case])
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        path = data.draw(st.sampled_from(PATHS[case]), label="path")
        holder = doc
        try:
            for key in path[:-1]:
                holder = holder[key]
            holder[path[-1]] = data.draw(JSON, label="value")
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed that path
    raw = json.dumps(doc, allow_nan=True).encode()
    env = fake_environment(stdin=gzip.compress(raw))
    try:
        loaded = inputs.load_snapshot(env, "-")
    except SnapshotError as exc:
        assert "\n" not in exc.message
        return
    _report_all_formats(loaded)
