"""The single-file build: qdiag and its libraries in one zip application, to copy
onto a host (scp) or into a pod (kubectl cp) and run with the Python found there.

    python -m qdiag.fleet.zipapp -o qdiag.pyz
    scp qdiag.pyz web-1: && ssh web-1 python3 qdiag.pyz snapshot -o - > web-1.json.gz

It is built from the Python environment qdiag runs in (nothing is downloaded):
the pure-Python libraries go in as they are; psutil's compiled part cannot be
imported from inside a zip, so it is unpacked on first run into a private
cache directory (~/.cache/qdiag, or a fresh temporary one when that is not
writable).  psutil's module is built for CPython's stable ABI, so it loads on
any CPython 3 of the same platform (the build says which).  py-spy, a program
rather than a library, is not in it: where it is missing, the threads probe
says so (and still reports what the kernel shows of each thread).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import re
import stat
import sys
import zipfile
from importlib import metadata
from pathlib import Path

# Requirements that are programs, not importable libraries.
PROGRAMS = {"py-spy"}
NATIVE_DIR = "_native"
# Fixed timestamps: the same environment builds the same bytes.
EPOCH = (2020, 1, 1, 0, 0, 0)
MIN_PYTHON = (3, 10)

MAIN = '''# qdiag, single-file build ({platform}; built with Python {built_with}).
import sys

_NEED, _EXACT = {need!r}, {exact!r}
if sys.version_info[:2] < _NEED or (_EXACT and sys.version_info[:2] != _NEED):
    sys.exit("qdiag: this single-file build runs with CPython {need_text}%s (it carries compiled modules built "
             "for it); this is Python %d.%d: run it with python{need_text}, or build one with this Python "
             "(pythonX.Y -m qdiag.fleet.zipapp where qdiag is installed)" % (("" if _EXACT else " or newer",)
                                                                           + sys.version_info[:2]))


def _native():
    """Unpack the compiled modules (psutil) once, where only this user can write."""
    import hashlib, os, tempfile, zipfile

    archive = zipfile.ZipFile(os.path.dirname(os.path.abspath(__file__)))
    names = [n for n in archive.namelist() if n.startswith("{native}/") and not n.endswith("/")]
    digest = hashlib.sha256("".join("%s:%d" % (n, archive.getinfo(n).CRC) for n in names).encode()).hexdigest()[:16]
    bases = [os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qdiag")]
    for base in bases + [None]:
        try:
            if base is None:
                base = tempfile.mkdtemp(prefix="qdiag-native-")
            os.makedirs(base, mode=0o700, exist_ok=True)
            info = os.stat(base)
            if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                continue  # someone else's, or writable by others: never load code from there
            target = os.path.join(base, "zipapp-" + digest)
            if not os.path.isdir(target):
                scratch = tempfile.mkdtemp(prefix=".unpack-", dir=base)
                for name in names:
                    archive.extract(name, scratch)
                os.rename(os.path.join(scratch, "{native}"), target)
                os.rmdir(scratch)
            return target
        except OSError:
            continue
    return None


_where = _native()
if _where:
    sys.path.insert(0, _where)
try:
    from qdiag.cli import main
except ImportError as exc:
    sys.exit("qdiag: this single-file build was made for {platform} and a compiled module does not load "
             "here (%s): build it on a machine like this one (python -m qdiag.fleet.zipapp)" % exc)

main()
'''


def _top_level(dist: metadata.Distribution) -> set[str]:
    names = set()
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if parts and not parts[0].endswith((".dist-info", ".egg-info", ".data")) and parts[0] not in ("..", "bin"):
            names.add(parts[0])
    return names


def _requirement_name(text: str) -> tuple[str, bool]:
    """('rich', has an extra marker)."""
    name = re.split(r"[\s<>=!~;\[(]", text, maxsplit=1)[0]
    return name, "extra ==" in text.replace('extra=="', 'extra == "')


def dependencies(root: str = "qdiag") -> tuple[list[metadata.Distribution], list[str]]:
    """Installed distributions qdiag needs (recursively), and the names not installed here."""
    seen: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    try:
        todo = list(metadata.requires(root) or [])
    except metadata.PackageNotFoundError:
        todo = []
    while todo:
        text = todo.pop()
        name, extra = _requirement_name(text)
        key = name.lower().replace("_", "-")
        if extra or key in seen or key in PROGRAMS:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            # A conditional one not installed here (tomli before 3.11, async-timeout before 3.11.3).
            missing.append(text.split(";", 1)[0].strip())
            continue
        seen[key] = dist
        todo += list(dist.requires or [])
    return list(seen.values()), sorted(set(missing))


def fetch_pure(requirements: list[str], scratch: Path) -> tuple[list[Path], list[str]]:
    """Pure-Python wheels of requirements not installed here, through pip (the package index the
    user's pip is set up for); what could not be had is returned by name."""
    import subprocess

    wheels, failed = [], []
    for requirement in requirements:
        dest = scratch / re.sub(r"[^\w.-]", "_", requirement)
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                              "--platform", "any", "--python-version", ".".join(map(str, MIN_PYTHON)), "--dest", str(dest), requirement],
                             capture_output=True, text=True, timeout=120)
        found = sorted(dest.glob("*-none-any.whl")) if run.returncode == 0 else []
        if found:
            wheels.append(found[0])
        else:
            failed.append(requirement)
    return wheels, failed


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(arcname, EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    zf.writestr(info, data)
    if arcname.endswith(".py") and not arcname.startswith(NATIVE_DIR + "/"):
        _add_bytecode(zf, arcname, data)


def _add_bytecode(zf: zipfile.ZipFile, arcname: str, source: bytes) -> None:
    """Modules imported from a zip are compiled at every start unless their bytecode is there
    too (zipimport writes none): NAME.pyc beside NAME.py, for this Python version (another
    version reads the source).  Hash-based and unchecked: the archive never changes."""
    from importlib.util import source_hash
    import marshal

    try:
        code = compile(source, arcname, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return  # a module for another Python version: its source is there
    from importlib.util import MAGIC_NUMBER

    header = MAGIC_NUMBER + (0b01).to_bytes(4, "little") + source_hash(source)
    info = zipfile.ZipInfo(arcname[:-3] + ".pyc", EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o644 | stat.S_IFREG) << 16
    zf.writestr(info, header + marshal.dumps(code))


def _package_dir(name: str) -> Path:
    module = __import__(name, fromlist=["__name__"])
    return Path(module.__file__).resolve().parent


def build(output: Path, python: str = "/usr/bin/env python3", fetch: bool = True) -> dict:
    """Write the zip application; return what went in.  With `fetch`, the conditional
    pure-Python requirements not installed here are downloaded with pip (a target's older
    Python may need them)."""
    import tempfile

    import qdiag

    dists, missing = dependencies()
    scratch = tempfile.TemporaryDirectory(prefix="qdiag-zipapp-")
    wheels, missing = fetch_pure(missing, Path(scratch.name)) if (fetch and missing) else ([], missing)
    buffer = io.BytesIO()
    counts = {"qdiag": 0, "libraries": 0, "native": 0}
    abi_tags: set[str] = set()
    with zipfile.ZipFile(buffer, "w") as zf:
        # qdiag itself; probes/ and playbooks/ sit beside it in a checkout and inside it once installed.
        sources = [(_package_dir("qdiag"), "qdiag"), (_package_dir("qdiag.probes"), "qdiag/probes"),
                   (_package_dir("qdiag.playbooks"), "qdiag/playbooks")]
        written = set()
        for base, prefix in sources:
            for path in sorted(base.rglob("*")):
                rel = path.relative_to(base)
                if "__pycache__" in rel.parts or path.is_dir() or path.suffix in (".pyc", ".pyo"):
                    continue
                if prefix == "qdiag" and rel.parts[0] in ("probes", "playbooks"):
                    continue  # from their own directories (symlinks in a checkout)
                arcname = f"{prefix}/{rel.as_posix()}"
                if arcname not in written:
                    written.add(arcname)
                    _add(zf, arcname, path.read_bytes())
                    counts["qdiag"] += 1
        # zipimport finds no namespace packages: each directory of modules gets its __init__.py.
        for folder in sorted({name.rsplit("/", 1)[0] for name in written if name.endswith(".py")}):
            if f"{folder}/__init__.py" not in written:
                _add(zf, f"{folder}/__init__.py", b"")
        native = _native_packages(dists)
        for dist in sorted(dists, key=lambda d: d.metadata["Name"].lower()):
            for file in sorted(dist.files or [], key=str):
                rel = Path(str(file))
                if not rel.parts or rel.parts[0] in ("..", "bin") or "__pycache__" in rel.parts:
                    continue
                if rel.suffix in (".pyc", ".pyo") or rel.parts[0].endswith(".data"):
                    continue
                if rel.parts[0].endswith(".dist-info") and rel.name not in ("METADATA", "entry_points.txt"):
                    continue
                path = Path(dist.locate_file(file))
                if not path.is_file():
                    continue
                if rel.parts[0] in native:
                    # Compiled modules load from files only: unpacked at first run, with their package.
                    _add(zf, f"{NATIVE_DIR}/{rel.as_posix()}", path.read_bytes(), executable=rel.suffix == ".so")
                    if rel.suffix == ".so":
                        counts["native"] += 1
                        tag = _abi_tag(rel.name)
                        if tag:
                            abi_tags.add(tag)
                    continue
                _add(zf, rel.as_posix(), path.read_bytes())
                counts["libraries"] += 1
        fetched = []
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as whl:
                for name in whl.namelist():
                    top = name.split("/", 1)[0]
                    if name.endswith("/") or (top.endswith(".dist-info") and not name.endswith("/METADATA")):
                        continue
                    _add(zf, name, whl.read(name))
            fetched.append(wheel.name.split("-")[0])
        scratch.cleanup()
        where = f"Linux {platform.machine()}" if sys.platform.startswith("linux") else sys.platform
        # A version-specific compiled module (pydantic_core, which typer needs) ties the build to
        # that CPython version; stable-ABI ones (psutil) do not.
        needs = MIN_PYTHON if not abi_tags else (sys.version_info[0], sys.version_info[1])
        exact = bool(abi_tags)
        _add(zf, "__main__.py", MAIN.format(platform=where, built_with=platform.python_version(),
                                            need=needs, exact=exact, need_text=".".join(map(str, needs)),
                                            native=NATIVE_DIR).encode())
    data = f"#!{python}\n".encode() + buffer.getvalue()
    output = Path(output)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
    return {"path": str(output), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "qdiag": qdiag.__version__, "files": counts, "libraries": sorted(d.metadata["Name"] for d in dists),
            "fetched": fetched, "not_included": missing, "python": ".".join(map(str, needs)) + ("" if exact else "+"),
            "platform": where}


def _native_packages(dists: list[metadata.Distribution]) -> set[str]:
    """Top-level packages with a compiled module (their Python files import it as a sibling).
    A compiled speed-up with a pure-Python twin (charset_normalizer's) is left out instead:
    the twin runs on every Python."""
    out = set()
    for dist in dists:
        files = [str(f) for f in dist.files or []]
        for so in (f for f in files if f.endswith(".so")):
            twin = so.split(".", 1)[0] + ".py"
            if twin not in files:
                out.add(Path(so).parts[0])
    return out


def _abi_tag(filename: str) -> str | None:
    """'_pydantic_core.cpython-311-x86_64-linux-gnu.so' -> 'cpython-311'; abi3 modules load on
    any CPython 3 and need no tag."""
    match = re.search(r"\.(cpython-\d+)", filename)
    return match.group(1) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qdiag.fleet.zipapp",
                                     description="Build qdiag as one file to copy onto a host or into a pod.")
    parser.add_argument("-o", "--output", default="qdiag.pyz", help="where to write it (default qdiag.pyz)")
    parser.add_argument("--python", default="/usr/bin/env python3", help="the interpreter line (#!...)")
    parser.add_argument("--no-fetch", action="store_true",
                        help="do not download the conditional pure-Python requirements not installed here")
    args = parser.parse_args(argv)
    info = build(Path(args.output), args.python, fetch=not args.no_fetch)
    print(f"{info['path']}: {info['bytes'] / 1e6:.1f} MB, qdiag {info['qdiag']}, "
          f"{len(info['libraries'])} libraries ({', '.join(info['libraries'])})")
    if info["fetched"]:
        print(f"fetched with pip (needed only on some Pythons, not installed here): {', '.join(info['fetched'])}")
    if info["not_included"]:
        print(f"NOT included (needed only on some Pythons; pip could not fetch them): {', '.join(info['not_included'])}")
    print(f"runs with CPython {info['python']} on {info['platform']}: "
          f"python3 {Path(info['path']).name} snapshot -o - > host.json.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
