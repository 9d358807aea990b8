"""A pool machine's CreateMachineRequest: the batch, its own name and token, no task; and a
standing machine's (docs/pool.md "Standing pool"): no batch, a token over its name only,
kept when it stops (no auto_destroy), with a version of its config to tell a stale one.

Its guest is its own (POOL_CPU_KIND, POOL_CPUS, POOL_MEMORY_MB): a machine converting for
minutes wants a performance CPU, not a shared one on a burst balance (README "Pool machine
size"). Its R2 keys are there only with MACHINE_R2_CREDENTIALS=true; otherwise every
assignment carries presigned URLs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..phases.base import r2_credentials
from ..pool_guest import pool_guest
from ..settings import Settings
from ..signing import machine_token, standing_token


def pool_env(settings: Settings, secrets: Mapping[str, str], batch_id: str, name: str) -> dict[str, str]:
    env = {
        "WORKER_MODE": "pool",
        "BATCH_ID": batch_id,
        "MACHINE_NAME": name,
        "MACHINE_TOKEN": machine_token(secrets["CALLBACK_SIGNING_KEY"], batch_id, name),
        "ORCHESTRATOR_URL": settings.orchestrator_url,
        "WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "R2_BUCKET": settings.r2_bucket,
    }
    if settings.machine_r2_credentials:
        env.update(r2_credentials(settings, secrets))
    return env


def pool_machine_request(settings: Settings, secrets: Mapping[str, str], batch_id: str, name: str,
                         memory_mb: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "region": settings.fly_region,
        "config": {
            "image": settings.fly_worker_image,
            "env": pool_env(settings, secrets, batch_id, name),
            "auto_destroy": True,
            "restart": {"policy": "no"},
            "guest": pool_guest(settings, memory_mb),
        },
    }


def standing_env(settings: Settings, secrets: Mapping[str, str], name: str) -> dict[str, str]:
    """A standing machine's environment: no BATCH_ID (it pulls for whichever batch it was
    started for), its own token."""
    env = pool_env(settings, secrets, "-", name)
    del env["BATCH_ID"]
    env["MACHINE_TOKEN"] = standing_token(secrets["CALLBACK_SIGNING_KEY"], name)
    return env


def standing_config(settings: Settings, secrets: Mapping[str, str], name: str, memory_mb: int) -> dict[str, Any]:
    """The machine's config: stopped, not destroyed, when its worker exits."""
    return {
        "image": settings.fly_worker_image,
        "env": standing_env(settings, secrets, name),
        "auto_destroy": False,
        "restart": {"policy": "no"},
        "guest": pool_guest(settings, memory_mb),
    }


def config_version(settings: Settings, memory_mb: int) -> str:
    """What makes two standing machines' configs the same apart from their names: the
    image, the guest and the environment's settings (not its secrets: a rotated signing key
    changes tokens the orchestrator checks, not the machine). A stopped machine of another
    version is updated before it starts."""
    facts = {"image": settings.fly_worker_image, "guest": pool_guest(settings, memory_mb),
             "region": settings.fly_region, "orchestrator": settings.orchestrator_url,
             "concurrency": settings.worker_concurrency, "bucket": settings.r2_bucket,
             "r2_keys": settings.machine_r2_credentials}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def standing_machine_request(settings: Settings, secrets: Mapping[str, str], name: str,
                             memory_mb: int) -> dict[str, Any]:
    return {"name": name, "region": settings.fly_region,
            "config": standing_config(settings, secrets, name, memory_mb)}
