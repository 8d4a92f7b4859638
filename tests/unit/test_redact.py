from qdiag.redact import MASK, Redactor, redact_url


def test_redact_url():
    assert redact_url("http://guest:hunter2@h:15672/api") == f"http://guest:{MASK}@h:15672/api"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("redis://:pw@[::1]:6379") == f"redis://:{MASK}@[::1]:6379"


def test_redactor_scrubs_known_values_keys_urls_and_args():
    r = Redactor({"hunter2", "tok-123456"})
    doc = {
        "cmdline": "worker --password=hunter2 --queue orders",
        "env": {"DB_PASSWORD": "hunter2", "other": "fine"},
        "url": "amqp://u:whatever@h/",
        "nested": [{"line": "auth failed for token tok-123456"}],
        "api_key": "abc",
        "count": 3,
    }
    out = r(doc)
    text = str(out)
    assert "hunter2" not in text and "tok-123456" not in text and "whatever" not in text
    assert out["env"]["other"] == "fine" and out["count"] == 3 and out["api_key"] == MASK
    assert out["cmdline"].startswith("worker --password=") and "--queue orders" in out["cmdline"]


def test_key_value_and_authorization_forms():
    r = Redactor()
    line = 'login {"password": "hunter2", "user": "bob"} password: swordfish Authorization: Bearer abc.def api_key=k123'
    out = r.text(line)
    for secret in ("hunter2", "swordfish", "abc.def", "k123"):
        assert secret not in out
    assert '"user": "bob"' in out and '"password": "***"' in out


def test_probe_option_secrets_are_collected(tmp_path):
    from qdiag.collect import secrets_of
    from qdiag.config import resolve

    (tmp_path / "qdiag.toml").write_text('[probes.kafka]\nsasl_password = "kafka-pw-123"\nclient_id = "qdiag"\n')
    settings = resolve({"redis": "redis://:redis-pw@h:6379/0"}, env={}, cwd=tmp_path)
    assert secrets_of(settings) == {"kafka-pw-123", "redis-pw"}
