"""Which stage the CLI talks to: the local stack by default, or a deployed stage.

Local: the API, moto and the R2 stand-in on loopback (ports from ARKE_*_PORT), with the
stack's dummy credentials (and its dummy admin token). The admin routes of a deployed stage
need ADMIN_TOKEN in the environment. Another stage: `--api-url`, the usual AWS environment (and
`--endpoint-url`) for SQS, and R2's own endpoint and keys from the environment.
Builds clients; sends nothing by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import boto3
from botocore.config import Config

from arke_local.endpoints import (
    DLQ_NAME,
    LOCAL_AWS_CREDENTIALS,
    LOCAL_SECRETS,
    LOCAL_STAGE,
    QUEUE_NAME,
    R2_BUCKET,
    REGION,
    Endpoints,
    Ports,
)


class TargetError(ValueError):
    """The options do not name a stage the CLI can reach."""


@dataclass(frozen=True)
class Target:
    stage: str
    api_url: str | None
    aws_endpoint: str | None  # None: boto3's own resolution (AWS_ENDPOINT_URL or AWS)
    r2_endpoint: str | None
    r2_access_key_id: str | None
    r2_secret_access_key: str | None
    bucket: str = R2_BUCKET
    queue_name: str = QUEUE_NAME
    dlq_name: str = DLQ_NAME
    region: str = REGION
    admin_token: str | None = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        return self.stage == LOCAL_STAGE

    def _aws_kwargs(self) -> dict:
        kw: dict = {"region_name": self.region, "config": Config(retries={"max_attempts": 5, "mode": "standard"})}
        if self.aws_endpoint:
            kw["endpoint_url"] = self.aws_endpoint
        if self.is_local:
            kw["aws_access_key_id"] = LOCAL_AWS_CREDENTIALS["AWS_ACCESS_KEY_ID"]
            kw["aws_secret_access_key"] = LOCAL_AWS_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        return kw

    def aws(self, service: str):
        return boto3.client(service, **self._aws_kwargs())

    def r2(self):
        if not self.r2_endpoint:
            raise TargetError("no R2 endpoint: set R2_ENDPOINT_URL or R2_ACCOUNT_ID, or --r2-endpoint-url")
        if not (self.r2_access_key_id and self.r2_secret_access_key):
            raise TargetError("no R2 keys: set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY")
        return boto3.client(
            "s3",
            endpoint_url=self.r2_endpoint,
            aws_access_key_id=self.r2_access_key_id,
            aws_secret_access_key=self.r2_secret_access_key,
            region_name="auto" if not self.is_local else self.region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16),
        )

    def require_api(self) -> str:
        if not self.api_url:
            raise TargetError(f"stage {self.stage!r}: give --api-url (or ARKE_API_URL)")
        return self.api_url.rstrip("/")


def resolve(
    *,
    stage: str | None = None,
    api_url: str | None = None,
    endpoint_url: str | None = None,
    r2_endpoint_url: str | None = None,
    bucket: str | None = None,
    queue_name: str | None = None,
    environ: dict[str, str] | None = None,
) -> Target:
    env = os.environ if environ is None else environ
    stage = stage or env.get("ARKE_STAGE") or LOCAL_STAGE
    bucket = bucket or env.get("R2_BUCKET") or R2_BUCKET
    queue_name = queue_name or env.get("QUEUE_NAME") or QUEUE_NAME
    dlq_name = env.get("DLQ_NAME") or DLQ_NAME
    if stage == LOCAL_STAGE:
        local = Endpoints(Ports.from_env(env))
        aws = endpoint_url or local.aws
        return Target(
            stage=stage,
            api_url=api_url or env.get("ARKE_API_URL") or local.api,
            aws_endpoint=aws,
            r2_endpoint=r2_endpoint_url or aws,
            r2_access_key_id=LOCAL_SECRETS["R2_ACCESS_KEY_ID"],
            r2_secret_access_key=LOCAL_SECRETS["R2_SECRET_ACCESS_KEY"],
            bucket=bucket,
            queue_name=queue_name,
            dlq_name=dlq_name,
            region=env.get("AWS_DEFAULT_REGION") or REGION,
            admin_token=env.get("ADMIN_TOKEN") or LOCAL_SECRETS["ADMIN_TOKEN"],
        )
    r2 = r2_endpoint_url or env.get("R2_ENDPOINT_URL")
    if not r2 and env.get("R2_ACCOUNT_ID"):
        r2 = f"https://{env['R2_ACCOUNT_ID']}.r2.cloudflarestorage.com"
    return Target(
        stage=stage,
        api_url=api_url or env.get("ARKE_API_URL"),
        aws_endpoint=endpoint_url,
        r2_endpoint=r2,
        r2_access_key_id=env.get("R2_ACCESS_KEY_ID"),
        r2_secret_access_key=env.get("R2_SECRET_ACCESS_KEY"),
        bucket=bucket,
        queue_name=queue_name,
        dlq_name=dlq_name,
        region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or REGION,
        admin_token=env.get("ADMIN_TOKEN"),
    )
