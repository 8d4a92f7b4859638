"""Precedence, lowest first: defaults < config file < QDIAG_* environment < flags."""

import pytest

from qdiag.config import resolve
from qdiag.errors import ConfigError, UsageError


def test_defaults(tmp_path):
    s = resolve({}, env={}, cwd=tmp_path)
    assert s.window_s == 5.0 and s.timeout_s == 30.0 and s.targets.kafka is None and s.config_file is None


def test_file_then_env_then_flags(tmp_path):
    (tmp_path / "qdiag.toml").write_text(
        '[targets]\nkafka = "file:9092"\nredis = "redis://file:6379/1"\nqueues = ["a", "b"]\n'
        '[run]\nwindow = 7\ntimeout = 40\n')
    s = resolve({}, env={}, cwd=tmp_path)
    assert s.targets.kafka.bootstrap == ("file:9092",) and s.window_s == 7 and s.targets.queues == ("a", "b")
    assert s.config_file == str(tmp_path / "qdiag.toml")

    env = {"QDIAG_KAFKA": "env:9092", "QDIAG_WINDOW": "3", "QDIAG_QUEUES": "x,y"}
    s = resolve({}, env=env, cwd=tmp_path)
    assert s.targets.kafka.bootstrap == ("env:9092",) and s.window_s == 3 and s.targets.queues == ("x", "y")
    assert s.targets.redis.host == "file"  # not overridden: still from the file
    assert s.timeout_s == 40

    s = resolve({"kafka": "flag:9092", "window": 2.0, "queues": ["z"]}, env=env, cwd=tmp_path)
    assert s.targets.kafka.bootstrap == ("flag:9092",) and s.window_s == 2 and s.targets.queues == ("z",)


def test_explicit_config_and_env_config(tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('[run]\nwindow = 9\ntimeout = 50\n')
    assert resolve({"config": str(other)}, env={}, cwd=tmp_path).window_s == 9
    assert resolve({}, env={"QDIAG_CONFIG": str(other)}, cwd=tmp_path).window_s == 9


def test_user_config_dir(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "qdiag").mkdir(parents=True)
    (home / ".config" / "qdiag" / "qdiag.toml").write_text('[run]\nwindow = 4\n')
    work = tmp_path / "work"
    work.mkdir()
    assert resolve({}, env={"HOME": str(home)}, cwd=work).window_s == 4
    (work / "qdiag.toml").write_text('[run]\nwindow = 6\n')  # ./qdiag.toml wins over the user's
    assert resolve({}, env={"HOME": str(home)}, cwd=work).window_s == 6


@pytest.mark.parametrize("text, expected", [
    ('[run\nwindow = 1', r"qdiag.toml: not valid TOML: .*line 1"),
    ('[targets]\nkafak = "x:1"\n', r"qdiag.toml:2: unknown key 'kafak' in \[targets\]"),
    ('[run]\nwindow = "soon"\n', r"qdiag.toml:2: 'window': 'soon' is not a number"),
    ('[nonsense]\na = 1\n', r"qdiag.toml:1: unknown table \[nonsense\]"),
])
def test_bad_config_file_names_file_and_line(tmp_path, text, expected):
    (tmp_path / "qdiag.toml").write_text(text)
    with pytest.raises(ConfigError, match=expected):
        resolve({}, env={}, cwd=tmp_path)


def test_missing_explicit_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({"config": str(tmp_path / "nope.toml")}, env={}, cwd=tmp_path)


@pytest.mark.parametrize("flags, expected", [
    ({"kafka": "localhost"}, "not HOST:PORT"),
    ({"rabbitmq": "ftp://x"}, "scheme 'ftp' is not supported"),
    ({"redis": "redis://h:6379/abc"}, "is not a number"),
    ({"redis": "redis://h:99999"}, "not a valid URL"),
    ({"dependencies": ["gopher://x"]}, "not supported"),
    ({"processes": ["("]}, "not a valid regular expression"),
    ({"window": 0}, "out of range"),
    ({"window": 10, "timeout": 5}, "must be longer than --window"),
    ({"pids": [-3]}, "not a process id"),
])
def test_bad_flags(tmp_path, flags, expected):
    with pytest.raises(UsageError, match=expected):
        resolve(flags, env={}, cwd=tmp_path)


def test_bad_env_value(tmp_path):
    with pytest.raises(ConfigError, match="QDIAG_TIMEOUT"):
        resolve({}, env={"QDIAG_TIMEOUT": "later"}, cwd=tmp_path)


def test_error_messages_never_echo_passwords(tmp_path):
    with pytest.raises(UsageError) as info:
        resolve({"rabbitmq": "http://admin:s3cretpw@host:notaport"}, env={}, cwd=tmp_path)
    assert "s3cretpw" not in info.value.one_line()


def test_rabbit_and_redis_urls(tmp_path):
    s = resolve({"rabbitmq": "amqp://u:p%40ss@h:5673/v%2Fh", "redis": "rediss://:pw@r:6380/2"}, env={}, cwd=tmp_path)
    r = s.targets.rabbitmq
    assert (r.scheme, r.host, r.port, r.username, r.password, r.vhost) == ("amqp", "h", 5673, "u", "p@ss", "v/h")
    assert not r.is_management
    d = s.targets.redis
    assert (d.host, d.port, d.db, d.password, d.tls) == ("r", 6380, 2, "pw", True)
    assert s.targets.secrets() == {"p@ss", "pw"}
