"""Creates the AWS resources of one stage, idempotently, through boto3.

The same code runs against moto on loopback (the local stack) and against real AWS:
the DynamoDB tables (through `chalicelib.models.ensure_tables()`), the job queue with
its dead-letter queue, the bucket standing in for R2 (local only: the real R2 is
Cloudflare's), and the secrets as SSM SecureString parameters. It never invents secret
values for a stage other than `local`: those are read from the environment, and only
when asked to put them. It never prints a secret value.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from arke_local.endpoints import DLQ_NAME, LOCAL_SECRETS, LOCAL_STAGE, QUEUE_NAME, R2_BUCKET, REGION

SECRET_NAMES = ("FLY_API_TOKEN", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY",
                "CALLBACK_SIGNING_KEY", "ADMIN_TOKEN")


class InfraError(RuntimeError):
    """A resource could not be created or brought to the wanted shape."""


@dataclass
class InfraConfig:
    stage: str = LOCAL_STAGE
    endpoint_url: str | None = None
    region: str = REGION
    queue_name: str = QUEUE_NAME
    dlq_name: str = DLQ_NAME
    bucket: str = R2_BUCKET
    max_receive_count: int = 3
    visibility_timeout_s: int = 60
    create_bucket: bool = True
    tables: bool = True

    @property
    def ssm_prefix(self) -> str:
        return f"/arke-preprocess/{self.stage}/"


@dataclass
class InfraReport:
    queue_url: str = ""
    dlq_url: str = ""
    bucket: str | None = None
    tables: bool = False
    secrets_put: list[str] = field(default_factory=list)
    secrets_missing: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[Infra] {message}", flush=True)


def client(service: str, cfg: InfraConfig):
    return boto3.client(
        service,
        endpoint_url=cfg.endpoint_url,
        region_name=cfg.region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def ensure_queues(sqs, cfg: InfraConfig) -> tuple[str, str]:
    """The dead-letter queue, then the job queue redriving to it after N receives."""
    dlq_url = _ensure_queue(sqs, cfg.dlq_name, {"MessageRetentionPeriod": "1209600"})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(cfg.max_receive_count)}
    )
    queue_url = _ensure_queue(
        sqs,
        cfg.queue_name,
        {"VisibilityTimeout": str(cfg.visibility_timeout_s), "RedrivePolicy": redrive},
    )
    return queue_url, dlq_url


def _ensure_queue(sqs, name: str, attributes: dict[str, str]) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in str(exc) and "QueueDoesNotExist" not in str(exc):
            raise
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        log(f"queue {name} created")
        return url
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    log(f"queue {name} present; attributes set")
    return url


def ensure_bucket(s3, cfg: InfraConfig) -> str:
    try:
        s3.head_bucket(Bucket=cfg.bucket)
        log(f"bucket {cfg.bucket} present")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs = {"Bucket": cfg.bucket}
        if cfg.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": cfg.region}
        s3.create_bucket(**kwargs)
        log(f"bucket {cfg.bucket} created")
    return cfg.bucket


def ensure_tables() -> None:
    """The orchestrator owns the table definitions; this only asks it to create them."""
    try:
        from chalicelib import models
        from chalicelib.settings import Settings
    except ImportError as exc:  # the orchestrator is not in this checkout
        raise InfraError(f"cannot import chalicelib.models: {exc}") from exc
    models.ensure_tables(Settings.from_env())
    log("tables present")


def secret_values(cfg: InfraConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Local stage: the dummy values. Any other stage: only what the environment holds."""
    if cfg.stage == LOCAL_STAGE:
        return dict(LOCAL_SECRETS)
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in SECRET_NAMES if environ.get(name)}


def put_secrets(ssm, cfg: InfraConfig, values: dict[str, str]) -> list[str]:
    put = []
    for name in SECRET_NAMES:
        if name not in values:
            continue
        ssm.put_parameter(
            Name=f"{cfg.ssm_prefix}{name}",
            Value=values[name],
            Type="SecureString",
            Overwrite=True,
        )
        put.append(name)
    if put:
        log(f"secrets put under {cfg.ssm_prefix}: {', '.join(put)}")
    return put


def create_all(
    cfg: InfraConfig, *, with_secrets: bool | None = None, environ: dict[str, str] | None = None
) -> InfraReport:
    """Every resource of the stage. Secrets: always for `local`, on request otherwise."""
    report = InfraReport()
    if cfg.tables:
        ensure_tables()
        report.tables = True
    report.queue_url, report.dlq_url = ensure_queues(client("sqs", cfg), cfg)
    if cfg.create_bucket:
        report.bucket = ensure_bucket(client("s3", cfg), cfg)
    if with_secrets is None:
        with_secrets = cfg.stage == LOCAL_STAGE
    if with_secrets:
        values = secret_values(cfg, environ)
        report.secrets_put = put_secrets(client("ssm", cfg), cfg, values)
        report.secrets_missing = [n for n in SECRET_NAMES if n not in values]
        if report.secrets_missing:
            log(
                "secrets not in the environment, not put: "
                + ", ".join(report.secrets_missing)
            )
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m arke_local.infra [STAGE]`: the same as `arke-preprocess infra`."""
    from arke_local import cli

    return cli.main(["infra", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
