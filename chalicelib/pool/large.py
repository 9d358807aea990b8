"""Where a pool-mode retry waits: which machines may take it (docs/pool.md "Memory tiers").

The pool holds machines of POOL_MEMORY_MB and of each larger tier (POOL_MEMORY_TIERS_MB);
a machine's name says its tier (`tier_of_name`), so a pull knows it without a read. A
pending task waits in the band of the smallest machines that may take it
(store/task_reads.py), counted in the batch's `tasks_large` unless that is band 0:
- an attempt that ran out of memory on a tier-k machine: band k+1, the next tier;
- an attempt whose worker read the TIFF's header and found it needs more memory than its
  machine (`needs_memory`, with the memory): the smallest tier that fits, else the largest;
- any other retry: the band of the machine's tier (a band-0 task a larger machine took
  waits for that tier again: a larger machine than needed, never a smaller one);
- beyond the largest tier, or any attempt that already ran on a single-mode machine: the
  large band, where each pass creates one single-mode machine per ready task, sized as
  single mode sizes any (`next_memory_mb`, up to MAX_MACHINE_MEMORY_MB).
Deciding only: the store moves the tasks, the spawner and the pool create the machines.
"""

from __future__ import annotations

import re

from ..machine_size import escalated_memory_mb
from ..phases.worker_errors import NEEDS_MEMORY, OUT_OF_MEMORY
from ..settings import Settings
from ..states import MachineMode
from ..store.task_reads import LARGE_BAND

_TIER_NAME = re.compile(r"-pool-m(\d+)-")


def tier_name_part(settings: Settings, tier: int) -> str:
    """What a tier-k machine's name carries after `-pool-` (nothing for tier 0: the names
    of a one-memory pool are as they always were)."""
    return f"m{settings.pool_tiers[tier]}-" if tier > 0 else ""


def tier_of_name(settings: Settings, name: str | None) -> int:
    """The tier of a pool machine, from its name; a memory no longer among the tiers (the
    settings changed) counts as the largest tier at or below it."""
    match = _TIER_NAME.search(name or "")
    if match is None:
        return 0
    memory_mb = int(match.group(1))
    return max(k for k, tier_mb in enumerate(settings.pool_tiers) if tier_mb <= memory_mb or k == 0)


def retry_band(settings: Settings, pool_machine: str | None, error_code: str | None,
               needed_mb: int | None = None) -> int:
    """The band an attempt's retry waits in: 0 in single mode; see the module's list in pool mode."""
    if settings.machine_mode != MachineMode.POOL.value:
        return 0
    if pool_machine is None:
        return LARGE_BAND
    tiers = settings.pool_tiers
    tier = tier_of_name(settings, pool_machine)
    if error_code == NEEDS_MEMORY and needed_mb:
        fits = [k for k, memory_mb in enumerate(tiers) if memory_mb >= needed_mb and k > tier]
        return fits[0] if fits else len(tiers) - 1
    if error_code != OUT_OF_MEMORY:
        return tier  # a machine of its tier may take it again (it may have come from a lower band)
    if tier + 1 < len(tiers):
        return tier + 1
    return LARGE_BAND if escalated_memory_mb(tiers[-1], settings) > tiers[-1] else tier
