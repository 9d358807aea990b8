"""The local stack driven as docs/local-stack.md tells AWS CLI users to: nothing but an
endpoint, a region and dummy credentials in the environment (boto3 reads them as the CLI
does), against the stack's moto launcher after `infra`. A wrong region fails loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from arke_local.endpoints import DLQ_NAME, QUEUE_NAME, R2_BUCKET, free_port
from arke_local.moto_server import signed_scope, wait_until_serving, wrong_region

# What the doc tells a user to export, and nothing else.
DOC_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def stack_moto(tmp_path_factory):
    """The stack's moto launcher on a free port, with the local stage's resources, made by
    the installed `arke-preprocess infra` run from outside the repo (as docs/deploy.md's
    `chalice deploy` path runs it)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARKE_"))}
    proc = subprocess.Popen([sys.executable, "-m", "arke_local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc)
        cli = str(Path(sys.executable).parent / "arke-preprocess")
        infra = subprocess.run([cli, "infra", "--stage", "local", "--endpoint-url", url], env=env,
                               cwd=tmp_path_factory.mktemp("elsewhere"), capture_output=True, text=True,
                               timeout=120)
        assert infra.returncode == 0, infra.stderr
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def doc_env(stack_moto, monkeypatch):
    """Exactly the doc's settings: endpoint, region, dummy keys; no profile, no other AWS_*."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in {**DOC_ENV, "AWS_ENDPOINT_URL": stack_moto}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return stack_moto


def test_s3_cp_sqs_send_message_dynamodb_scan(doc_env, tmp_path):
    session = boto3.Session()  # everything from the environment, as the CLI does
    tiff = tmp_path / "page.tif"
    tiff.write_bytes(b"II*\x00" + b"\x00" * 64)
    s3 = session.client("s3")
    s3.upload_file(str(tiff), R2_BUCKET, "staging/batch_cli/page.tif")  # aws s3 cp
    listed = s3.list_objects_v2(Bucket=R2_BUCKET, Prefix="staging/batch_cli/")  # aws s3 ls
    assert [o["Key"] for o in listed["Contents"]] == ["staging/batch_cli/page.tif"]

    sqs = session.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=QUEUE_NAME)["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"batch_id": "batch_cli"}))
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "1"
    assert sqs.get_queue_url(QueueName=DLQ_NAME)["QueueUrl"].endswith(DLQ_NAME)

    ddb = session.client("dynamodb")
    assert {"arke-preprocess-batches", "arke-preprocess-tasks", "arke-preprocess-files"} <= set(
        ddb.list_tables()["TableNames"])
    assert ddb.scan(TableName="arke-preprocess-batches")["Count"] == 0

    ssm = session.client("ssm")
    names = {p["Name"] for p in ssm.get_parameters_by_path(Path="/arke-preprocess/local/")["Parameters"]}
    assert "/arke-preprocess/local/ADMIN_TOKEN" in names


@pytest.mark.parametrize("service", ["dynamodb", "sqs", "s3", "ssm"])
def test_a_wrong_region_fails_loudly_instead_of_listing_nothing(doc_env, monkeypatch, service):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = boto3.Session().client(service)
    call = {"dynamodb": lambda: client.scan(TableName="arke-preprocess-batches"),
            "sqs": lambda: client.list_queues(),
            "s3": lambda: client.list_objects_v2(Bucket=R2_BUCKET),
            "ssm": lambda: client.get_parameters_by_path(Path="/arke-preprocess/local/")}[service]
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    assert error["Code"] == "WrongRegion"
    assert "region us-east-1" in error["Message"] and "eu-west-1" in error["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_region_check_reads_the_signature_and_lets_r2_auto_through():
    header = ("AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/dynamodb/aws4_request, "
              "SignedHeaders=host, Signature=abc")
    assert signed_scope({"HTTP_AUTHORIZATION": header}) == ("eu-west-1", "dynamodb")
    assert wrong_region({"HTTP_AUTHORIZATION": header}) == "eu-west-1"
    assert wrong_region({"HTTP_AUTHORIZATION": header.replace("eu-west-1", "us-east-1")}) is None
    r2 = header.replace("eu-west-1/dynamodb", "auto/s3")
    assert wrong_region({"HTTP_AUTHORIZATION": r2}) is None  # the worker signs for R2's "auto"
    presigned = "X-Amz-Credential=testing%2F20260101%2Fap-south-1%2Fs3%2Faws4_request&X-Amz-Signature=x"
    assert wrong_region({"QUERY_STRING": presigned}) == "ap-south-1"
    assert wrong_region({}) is None  # unsigned (moto's own /moto-api/) passes
