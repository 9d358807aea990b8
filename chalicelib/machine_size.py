"""How much memory a task's machine gets: sized from the image, doubled after running out.

Pure decisions (no R2, no DynamoDB, no Fly): the runner reads the header and the task, and
carries out what these return. The first attempt gets what the worker's full-quality
encoder needs for the image (README "Machine memory"); an attempt that ran out of memory is
followed by one with twice as much; everything stays between MACHINE_MEMORY_MB and
MAX_MACHINE_MEMORY_MB, in Fly's 256 MB steps.
"""

from __future__ import annotations

import math
from typing import Any

from .settings import Settings
from .tiff_header import ImageHeader

MIB = 1024 * 1024
FLY_MEMORY_STEP_MB = 256  # Fly: guest.memory_mb must be a multiple of 256
# Fly: shared CPUs allow at most 2048 MB each; the seed asked for 2 and they stay the floor.
SHARED_MB_PER_CPU = 2048
SHARED_CPU_COUNTS = (2, 4, 8)

# The worker's formula, duplicated (worker/ and chalicelib/ must not import each other):
# worker/encode.py MOZJPEG_FULL_BYTES_PER_PIXEL, PROCESS_BASELINE, RESERVE_FRACTION and
# MIN_RESERVE, as used by full_quality_memory(). tests/orchestrator/test_orch_machine_memory.py
# asserts that both agree.
FULL_QUALITY_BYTES_PER_PIXEL = {"RGB": 6.1, "L": 4.1}
PROCESS_BASELINE = 48 * MIB
RESERVE_FRACTION = 0.2
MIN_RESERVE = 160 * MIB


def full_quality_memory(width: int, height: int, mode: str = "RGB") -> int:
    """Bytes of machine memory with which the worker's budget admits its full-quality
    (multi-pass mozjpeg) encoder for this image: worker/encode.py full_quality_memory."""
    need = width * height * FULL_QUALITY_BYTES_PER_PIXEL[mode] + PROCESS_BASELINE
    return int(max(need + MIN_RESERVE, need / (1 - RESERVE_FRACTION)))


def fly_step(memory_mb: float) -> int:
    """Up to the next size Fly accepts."""
    return int(math.ceil(memory_mb / FLY_MEMORY_STEP_MB)) * FLY_MEMORY_STEP_MB


def bounded(memory_mb: float, settings: Settings) -> int:
    """In Fly's steps, at least the default machine, at most the cap."""
    return min(settings.max_machine_memory_mb, max(settings.machine_memory_mb, fly_step(memory_mb)))


def memory_for_image(header: ImageHeader | None, settings: Settings) -> int:
    """The first attempt's memory: what the image needs at full quality, or the default
    machine when its header could not be read (the worker then says what is wrong)."""
    if header is None:
        return settings.machine_memory_mb
    return bounded(full_quality_memory(header.width, header.height, header.mode) / MIB, settings)


def escalated_memory_mb(memory_mb: int, settings: Settings) -> int:
    """The memory of the attempt after one that ran out with `memory_mb`: twice as much,
    up to the cap (at the cap, the cap again)."""
    return bounded(2 * memory_mb, settings)


def attempt_memory_mb(known_mb: int | None, settings: Settings) -> int | None:
    """The memory the task already holds for its next attempt (an escalation's, or the last
    attempt's), bounded again as the settings may have changed since; None when it holds
    none, and the image decides."""
    if known_mb is None:
        return None
    return bounded(known_mb, settings)


def machine_guest(memory_mb: int) -> dict[str, Any]:
    """Fly's guest for that memory: 2 shared CPUs as the seed, more where Fly requires them
    (at most 2048 MB per shared CPU: 8192 MB needs 4)."""
    cpus = next((n for n in SHARED_CPU_COUNTS if memory_mb <= n * SHARED_MB_PER_CPU), SHARED_CPU_COUNTS[-1])
    return {"memory_mb": memory_mb, "cpus": cpus, "cpu_kind": "shared"}
