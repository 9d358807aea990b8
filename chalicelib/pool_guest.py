"""The Fly guest of a pool machine: its own CPU kind, count and memory (README "Pool machine size").

Single mode sizes each task's machine from its image (`machine_size.py`, shared CPUs, right
for one short conversion on the burst balance). A pool machine converts for minutes, so it
gets the fixed guest of POOL_CPU_KIND (default performance), POOL_CPUS and POOL_MEMORY_MB,
checked against Fly's rules when the settings are read. Pure: no Fly call here.
"""

from __future__ import annotations

from typing import Any

from .settings import Settings


def pool_guest(settings: Settings, memory_mb: int | None = None) -> dict[str, Any]:
    """`config.guest` of a pool machine's create request (with `memory_mb`: of that tier)."""
    return {"cpu_kind": settings.pool_cpu_kind, "cpus": settings.pool_cpus,
            "memory_mb": memory_mb or settings.pool_memory_mb}
