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


def test_repeated_strings_are_masked_once_with_the_same_result(monkeypatch):
    """Keys and names repeat in every row of a document: the Redactor masks each
    distinct short string once, and the document comes out exactly as if every
    string had been masked where it stands."""
    from qdiag import redact

    strings = ["topic", "orders", "password=hunter2 at login", "amqp://app:s3cret@rabbit:5672/", "hunter2",
               "consumer-1 /10.0.0.7", "x" * 500 + " token=abc"]
    doc = {"rows": [{s: s, "n": i, "list": [s, i]} for i, s in enumerate(strings * 30)],
           "db_password": "hunter2"}
    redactor = Redactor({"hunter2"})
    out = redactor(doc)
    fresh = Redactor({"hunter2"})
    for row, s in zip(out["rows"], strings * 30):
        expected = fresh._masked(s)
        assert row["list"][0] == expected
        assert row[expected if not fresh._is_secret_key(s) else s] in (expected, MASK)
    assert out["db_password"] == MASK
    # (a lone word equal to a password is a name, kept by the module's rule; in free text it goes)
    assert "password=hunter2" not in repr(out) and "s3cret" not in repr(out) and "token=abc" not in repr(out)
    # Long strings are not kept; the memo is bounded.
    assert all(len(k) <= redact._MEMO_MAX_CHARS for k in redactor._memo)
    monkeypatch.setattr(redact, "_MEMO_MAX_ENTRIES", 3)
    small = Redactor()
    small({"values": [f"name-{i}" for i in range(100)]})
    assert len(small._memo) == 3
