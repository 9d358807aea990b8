"""Pure pieces of the worker: key mapping, settings, callback delivery, error wording."""

from __future__ import annotations

import pytest

from worker.callback import deliver
from worker.exceptions import CallbackDeliveryError, ConfigError
from worker.keys import file_name, jpeg_key
from worker.log import TaskLog
from worker.r2 import describe
from worker.settings import ContractSettings, Limits, default_max_pixels

ENV = {
    "TASK_ID": "t1",
    "BATCH_ID": "b1",
    "INPUT_R2_KEY": "staging/b1/a.tif",
    "R2_ACCOUNT_ID": "acct123",
    "R2_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "R2_SECRET_ACCESS_KEY": "secretsecret",
    "R2_BUCKET": "arke-staging",
    "CALLBACK_URL": "http://127.0.0.1:1/callback/b1/t1",
}


@pytest.mark.parametrize(
    ("key", "jpeg"),
    [
        ("a/b/c.tif", "a/b/c.jpg"),
        ("a/b/c.TIFF", "a/b/c.jpg"),
        ("a/b/c.TiF", "a/b/c.jpg"),
        ("a/tif.dir/c.tiff", "a/tif.dir/c.jpg"),
        ("a/b/c.tiff.tif", "a/b/c.tiff.jpg"),
        ("a/b/noext", "a/b/noext.jpg"),
    ],
)
def test_jpeg_key(key, jpeg):
    assert jpeg_key(key) == jpeg
    assert file_name(jpeg) == jpeg.rsplit("/", 1)[-1]


def test_settings_from_exact_seed_environment():
    s = ContractSettings.from_env(ENV)
    assert s.endpoint_url == "https://acct123.r2.cloudflarestorage.com"
    assert s.callback_token is None
    assert "secretsecret" not in repr(s) and "AKIDEXAMPLE" not in repr(s)
    local = ContractSettings.from_env({**ENV, "R2_ENDPOINT_URL": "http://127.0.0.1:5000"})
    assert local.endpoint_url == "http://127.0.0.1:5000"


def test_settings_missing_variables_are_named():
    env = {k: v for k, v in ENV.items() if k not in ("R2_BUCKET", "CALLBACK_URL")}
    with pytest.raises(ConfigError, match="R2_BUCKET, CALLBACK_URL"):
        ContractSettings.from_env(env)


def test_limits():
    assert Limits.from_env({"WORKER_MAX_PIXELS": "1234567"}).max_pixels == 1234567
    assert Limits.from_env({"WORKER_CONVERT_TIMEOUT_S": "7.5"}).timeout_s == 7.5
    with pytest.raises(ConfigError):
        Limits.from_env({"WORKER_MAX_PIXELS": "many"})
    # sized to the machine: a 1024 MB Fly machine takes a 250 MP scan, not a 300 MP one
    assert 250_000_000 < default_max_pixels(1024 * 1024 * 1024) < 300_000_000


def test_redaction():
    log = TaskLog("b", "t", ["secretsecret", "acct123"])
    assert log.redact("https://acct123.r2/x secretsecret") == "https://***.r2/x ***"


class FakeClientError(Exception):
    def __init__(self, status, message):
        self.response = {"ResponseMetadata": {"HTTPStatusCode": status},
                         "Error": {"Code": str(status), "Message": message}}  # fmt: skip


def test_describe_http_errors_as_the_seed():
    assert describe(FakeClientError(404, "The specified key does not exist.")) == "404 Not Found"
    assert describe(FakeClientError(403, "Access Denied")) == "403 Forbidden"
    assert describe(ConnectionError("refused")) == "ConnectionError: refused"


def test_deliver_retries_then_succeeds(receiver):
    receiver.failures = 2
    sleeps = []
    status = deliver(receiver.url("/cb?attempt=1"), {"a": 1}, token="tok", attempts=5,
                     backoff_s=0.01, timeout_s=5, log=TaskLog(), sleep=sleeps.append)  # fmt: skip
    assert status == 200
    assert len(receiver.requests) == 3 and len(sleeps) == 2
    assert receiver.requests[0]["path"] == "/cb?attempt=1"
    assert receiver.requests[0]["headers"]["Authorization"] == "Bearer tok"


def test_deliver_honours_retry_after(receiver):
    receiver.failures, receiver.fail_status = 1, 429
    sleeps = []
    deliver(receiver.url("/cb"), {}, token=None, attempts=3, backoff_s=0.001, timeout_s=5,
            log=TaskLog(), sleep=sleeps.append)  # fmt: skip
    assert len(sleeps) == 1


def test_deliver_gives_up(receiver):
    receiver.failures = 100
    with pytest.raises(CallbackDeliveryError, match="after 3 attempts: 503"):
        deliver(receiver.url("/cb"), {}, token=None, attempts=3, backoff_s=0.001, timeout_s=5,
                log=TaskLog(), sleep=lambda s: None)  # fmt: skip


def test_deliver_unreachable():
    with pytest.raises(CallbackDeliveryError, match="after 2 attempts"):
        deliver("http://127.0.0.1:9/cb", {}, token=None, attempts=2, backoff_s=0.001,
                timeout_s=2, log=TaskLog(), sleep=lambda s: None)  # fmt: skip


def test_worker_does_not_import_chalicelib():
    from pathlib import Path

    for path in (Path(__file__).parents[2] / "worker").rglob("*.py"):
        text = path.read_text()
        assert "chalicelib" not in text.replace("`chalicelib/`", ""), path
