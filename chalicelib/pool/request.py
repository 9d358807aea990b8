"""A pool machine's CreateMachineRequest: the batch, its own name and token, no task.

Its guest is its own (POOL_CPU_KIND, POOL_CPUS, POOL_MEMORY_MB): a machine converting for
minutes wants a performance CPU, not a shared one on a burst balance (README "Pool machine
size"). Its R2 keys are there only with MACHINE_R2_CREDENTIALS=true; otherwise every
assignment carries presigned URLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..phases.base import r2_credentials
from ..pool_guest import pool_guest
from ..settings import Settings
from ..signing import machine_token


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


def pool_machine_request(settings: Settings, secrets: Mapping[str, str], batch_id: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "region": settings.fly_region,
        "config": {
            "image": settings.fly_worker_image,
            "env": pool_env(settings, secrets, batch_id, name),
            "auto_destroy": True,
            "restart": {"policy": "no"},
            "guest": pool_guest(settings),
        },
    }
