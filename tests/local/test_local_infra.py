"""infra: every resource of a stage, created idempotently against moto's server."""

from __future__ import annotations

import json
import os

import boto3
import pytest
import requests

from arke_local import infra


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch):
    """This test's moto, through the environment as the stack passes it. Afterwards the
    environment is restored (the infra command sets names in it) and the orchestrator's
    models forget their connection to this moto, so no later test in the process sees it."""
    from chalicelib import models

    saved = dict(os.environ)
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield moto_endpoint
    os.environ.clear()
    os.environ.update(saved)
    for model in models.MODELS:
        model._connection = None


def _client(service, endpoint):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def test_local_stage_creates_everything_and_twice_is_harmless(aws_env):
    cfg = infra.InfraConfig(stage="local", endpoint_url=aws_env, max_receive_count=3)
    first = infra.create_all(cfg)
    second = infra.create_all(cfg)
    assert first.queue_url == second.queue_url
    assert first.tables and first.bucket == "arke-staging"

    sqs = _client("sqs", aws_env)
    attrs = sqs.get_queue_attributes(QueueUrl=first.queue_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 3
    assert redrive["deadLetterTargetArn"].endswith(":preprocess-dlq")

    names = _client("dynamodb", aws_env).list_tables()["TableNames"]
    assert {"arke-preprocess-batches", "arke-preprocess-tasks", "arke-preprocess-files"} <= set(names)

    _client("s3", aws_env).head_bucket(Bucket="arke-staging")

    ssm = _client("ssm", aws_env)
    for name in infra.SECRET_NAMES:
        p = ssm.get_parameter(Name=f"/arke-preprocess/local/{name}", WithDecryption=True)["Parameter"]
        assert p["Type"] == "SecureString" and p["Value"]


def test_receive_count_is_configurable_and_reapplied(aws_env):
    infra.create_all(infra.InfraConfig(stage="local", endpoint_url=aws_env, tables=False))
    report = infra.create_all(
        infra.InfraConfig(stage="local", endpoint_url=aws_env, tables=False, max_receive_count=5)
    )
    attrs = _client("sqs", aws_env).get_queue_attributes(
        QueueUrl=report.queue_url, AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]) == 5


def test_other_stage_takes_secrets_only_from_the_environment(aws_env):
    cfg = infra.InfraConfig(stage="dev", endpoint_url=aws_env, tables=False, create_bucket=False)
    environ = {"FLY_API_TOKEN": "from-env", "R2_ACCOUNT_ID": "acct"}
    report = infra.create_all(cfg, with_secrets=True, environ=environ)
    assert report.secrets_put == ["FLY_API_TOKEN", "R2_ACCOUNT_ID"]
    assert report.secrets_missing == ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "CALLBACK_SIGNING_KEY",
                                      "ADMIN_TOKEN"]
    assert report.bucket is None
    ssm = _client("ssm", aws_env)
    got = ssm.get_parameter(Name="/arke-preprocess/dev/FLY_API_TOKEN", WithDecryption=True)
    assert got["Parameter"]["Value"] == "from-env"
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name="/arke-preprocess/dev/R2_SECRET_ACCESS_KEY")


def test_other_stage_without_the_flag_puts_no_secrets(aws_env):
    cfg = infra.InfraConfig(stage="prod", endpoint_url=aws_env, tables=False, create_bucket=False)
    report = infra.create_all(cfg, environ={"FLY_API_TOKEN": "x"})
    assert report.secrets_put == []
    assert infra.secret_values(cfg, {}) == {}


def test_cli_infra_command_against_moto(aws_env, capsys):
    from arke_local import cli

    assert cli.main(["infra", "--stage", "local", "--endpoint-url", aws_env, "--no-tables"]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "[Infra] queue arke-preprocess-jobs" in out
    assert "testing" not in out and "local-fly-token" not in out  # no secret values in logs
