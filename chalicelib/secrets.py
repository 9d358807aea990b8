"""Secrets from SSM Parameter Store (SecureString), falling back to the environment.

Read once per cold start: one GetParametersByPath under the stage's prefix, cached for the
life of the process. A secret's value never appears in a log line or an error message;
only its name does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .logs import log
from .settings import Settings

SECRET_NAMES = (
    "FLY_API_TOKEN",
    "R2_ACCOUNT_ID",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "CALLBACK_SIGNING_KEY",
    "ADMIN_TOKEN",
)

_lock = threading.Lock()
_cache: dict[str, str] | None = None


class MissingSecretError(RuntimeError):
    """A secret the orchestrator needs is in neither SSM nor the environment."""

    def __init__(self, name: str, prefix: str) -> None:
        super().__init__(f"secret {name} is not set (SSM {prefix}{name} or env {name})")
        self.name = name


def _from_ssm(settings: Settings) -> dict[str, str]:
    client = boto3.client("ssm", region_name=settings.region)
    found: dict[str, str] = {}
    kwargs = {"Path": settings.ssm_prefix, "WithDecryption": True, "Recursive": False}
    while True:
        page = client.get_parameters_by_path(**kwargs)
        for param in page.get("Parameters", []):
            name = param["Name"][len(settings.ssm_prefix):]
            if name in SECRET_NAMES:
                found[name] = param["Value"]
        token = page.get("NextToken")
        if not token:
            return found
        kwargs["NextToken"] = token


def load_secrets(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """All known secrets: SSM first, then the environment for any SSM does not have."""
    global _cache
    with _lock:
        if _cache is not None:
            return _cache
        env = settings.env if env is None else env
        try:
            values = _from_ssm(settings)
        except (BotoCoreError, ClientError) as exc:
            log("[Secrets]", "ssm_unavailable", prefix=settings.ssm_prefix, error=type(exc).__name__)
            values = {}
        for name in SECRET_NAMES:
            if name not in values and env.get(name):
                values[name] = env[name]
        log("[Secrets]", "loaded", ssm_prefix=settings.ssm_prefix, names=",".join(sorted(values)))
        _cache = values
        return values


def secret(settings: Settings, name: str) -> str:
    value = load_secrets(settings).get(name, "")
    if not value:
        raise MissingSecretError(name, settings.ssm_prefix)
    return value


def forget_secrets() -> None:
    """Drop the cache (tests, and a rotated secret after a restart)."""
    global _cache
    with _lock:
        _cache = None
