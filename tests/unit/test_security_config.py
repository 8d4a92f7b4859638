"""Issue 13 #1 and #17: which config files qdiag trusts, where program paths may
come from, and TOML nested past reason.  Real files, real owners and modes
(the tests run as root: os.chown gives a file to another user)."""

import os
import stat

import pytest

from qdiag.config import MAX_TOML_DEPTH, parse_toml, resolve
from qdiag.errors import ConfigError

OTHER_UID = 65534  # nobody
EVIL = '[probes.threads]\npy_spy = "/tmp/evil-py-spy"\n'
PLAIN = '[run]\nwindow = 7\ntimeout = 40\n'

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def write(path, text, mode=0o644):
    path.write_text(text)
    path.chmod(mode)
    return path


# ---------------------------------------------------------------- ./qdiag.toml

def test_own_config_in_cwd_is_loaded(tmp_path):
    write(tmp_path / "qdiag.toml", PLAIN)
    assert resolve({}, env={}, cwd=tmp_path).window_s == 7


@needs_root
def test_config_in_cwd_owned_by_someone_else_is_refused(tmp_path):
    path = write(tmp_path / "qdiag.toml", PLAIN)
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError) as info:
        resolve({}, env={}, cwd=tmp_path)
    line = info.value.one_line()
    assert str(path) in line and f"uid {OTHER_UID}" in line and "--config" in line
    assert "\n" not in line


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666], ids=oct)
def test_config_in_cwd_writable_by_group_or_others_is_refused(tmp_path, mode):
    path = write(tmp_path / "qdiag.toml", PLAIN, mode)
    with pytest.raises(ConfigError, match=r"writable by group or others") as info:
        resolve({}, env={}, cwd=tmp_path)
    assert f"chmod go-w {path}" in info.value.one_line()


@needs_root
def test_symlink_planted_by_someone_else_is_refused(tmp_path):
    """A root-owned file reached through another user's symlink: the link is the user's choice, not root's."""
    real = write(tmp_path / "real.toml", PLAIN)
    link = tmp_path / "qdiag.toml"
    link.symlink_to(real)
    os.chown(link, OTHER_UID, OTHER_UID, follow_symlinks=False)
    with pytest.raises(ConfigError, match=r"symlink is owned by uid 65534"):
        resolve({}, env={}, cwd=tmp_path)


@needs_root
def test_someone_elses_file_is_loaded_when_named_explicitly(tmp_path):
    path = write(tmp_path / "qdiag.toml", PLAIN, 0o666)
    os.chown(path, OTHER_UID, OTHER_UID)
    assert resolve({"config": str(path)}, env={}, cwd=tmp_path).window_s == 7
    assert resolve({}, env={"QDIAG_CONFIG": str(path)}, cwd=tmp_path).window_s == 7


# ---------------------------------------------------------------- program paths

def test_program_path_from_implicit_config_is_refused(tmp_path):
    """Even a trusted ./qdiag.toml may not name programs: qdiag runs them as root."""
    path = write(tmp_path / "qdiag.toml", EVIL)
    with pytest.raises(ConfigError) as info:
        resolve({}, env={}, cwd=tmp_path)
    line = info.value.one_line()
    assert f"{path}:2" in line and "py_spy" in line and f"--config {path}" in line


def test_program_path_from_user_config_dir_is_refused(tmp_path):
    _, env, work = user_config(tmp_path, '[probes.threads]\njcmd = "/opt/jdk/bin/jcmd"\n')
    with pytest.raises(ConfigError, match=r"jcmd names a program to run"):
        resolve({}, env=env, cwd=work)


def test_program_path_from_explicit_config_is_taken(tmp_path):
    path = write(tmp_path / "tools.toml", EVIL)
    settings = resolve({"config": str(path)}, env={}, cwd=tmp_path)
    assert settings.options_for("threads")["py_spy"] == "/tmp/evil-py-spy"


def test_program_path_must_be_absolute(tmp_path):
    """A relative path would resolve against the current directory, the very place not to trust."""
    path = write(tmp_path / "tools.toml", '[probes.threads]\npy_spy = "bin/py-spy"\n')
    with pytest.raises(ConfigError, match=r"py_spy = 'bin/py-spy' is not an absolute path"):
        resolve({"config": str(path)}, env={}, cwd=tmp_path)


# ---------------------------------------------------------------- user config directory

def user_config(tmp_path, text, mode=0o644):
    """~/.config/qdiag/qdiag.toml under a fake HOME: (its path, env, a working directory without a config)."""
    home = tmp_path / "home"
    (home / ".config" / "qdiag").mkdir(parents=True)
    path = write(home / ".config" / "qdiag" / "qdiag.toml", text, mode)
    work = tmp_path / "work"
    work.mkdir()
    return path, {"HOME": str(home)}, work


@needs_root
def test_user_config_owned_by_someone_else_is_refused(tmp_path):
    path, env, work = user_config(tmp_path, PLAIN)
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError, match=r"uid 65534"):
        resolve({}, env=env, cwd=work)


def test_user_config_writable_by_others_is_refused(tmp_path):
    _, env, work = user_config(tmp_path, PLAIN, 0o666)
    with pytest.raises(ConfigError, match=r"writable by group or others"):
        resolve({}, env=env, cwd=work)


def test_fifo_named_qdiag_toml_does_not_hang(tmp_path):
    """An explicit path that is a FIFO is refused before anything opens it."""
    fifo = tmp_path / "qdiag.toml"
    os.mkfifo(fifo)
    assert not stat.S_ISREG(os.stat(fifo).st_mode)
    with pytest.raises(ConfigError):
        resolve({"config": str(fifo)}, env={}, cwd=tmp_path)


def test_cli_names_the_file_and_the_fix(tmp_path, monkeypatch, capsys):
    from tests.cli_helper import run_cli

    write(tmp_path / "qdiag.toml", EVIL)
    monkeypatch.chdir(tmp_path)
    result = run_cli("snapshot", "--probe", "host", "--no-auto-detect", "-o", tmp_path / "s.json.gz")
    assert result.code != 0
    [line] = result.err.strip().splitlines()
    assert "py_spy" in line and "--config" in line and str(tmp_path / "qdiag.toml") in line
    assert not (tmp_path / "s.json.gz").exists()


# ---------------------------------------------------------------- nesting (#17)

def deep_toml(depth: int) -> str:
    return "a = " + "[" * depth + "1" + "]" * depth + "\n"


@pytest.mark.parametrize("text", [
    deep_toml(5000),                                            # past the parser's recursion
    "a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n",          # inline tables
    deep_toml(MAX_TOML_DEPTH + 1),                              # parses, but deeper than any qdiag file needs
])
def test_deep_nesting_is_one_clear_error(tmp_path, text):
    path = write(tmp_path / "deep.toml", "[check]\n" + text)
    with pytest.raises(ConfigError, match=r"nested more than \d+ levels deep") as info:
        resolve({"config": str(path)}, env={}, cwd=tmp_path)
    assert str(path) in info.value.one_line()


def test_nesting_that_qdiag_files_use_still_parses():
    assert parse_toml(deep_toml(MAX_TOML_DEPTH - 2), "x.toml")["a"]


def test_deep_playbook_is_a_playbook_error(tmp_path):
    from qdiag.diagnosis.playbook import PlaybookError, parse_text

    with pytest.raises(PlaybookError, match=r"rules\.toml: tables or arrays nested"):
        parse_text('schema = "qdiag.playbook/1"\n' + deep_toml(4000), "rules.toml")


def test_deep_policy_is_a_config_error(tmp_path):
    from qdiag.check.policy import from_file

    path = write(tmp_path / "policy.toml", deep_toml(4000))
    with pytest.raises(ConfigError, match=r"policy\.toml: tables or arrays nested"):
        from_file(path)
