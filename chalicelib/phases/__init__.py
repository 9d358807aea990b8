"""The phase registry: status value -> phase, and task-id prefix -> phase.

A batch starts in the first phase; when every task of a phase has ended, the batch moves
to the phase that one names, or to final delivery when it names none.
"""

from __future__ import annotations

from .base import Discovery, FileEntry, MachineContext, Phase, TaskSpec, TaskView, task_id_for
from .tiff_conversion import TiffConversion

__all__ = ["Discovery", "FileEntry", "MachineContext", "Phase", "PhaseRegistry", "TaskSpec", "TaskView",
           "default_registry", "task_id_for"]


class PhaseRegistry:
    def __init__(self, phases: list[Phase]) -> None:
        if not phases:
            raise ValueError("a registry needs at least one phase")
        self._by_name = {p.name: p for p in phases}
        self._by_prefix = {p.task_prefix: p for p in phases}
        if len(self._by_name) != len(phases) or len(self._by_prefix) != len(phases):
            raise ValueError("phase names and task prefixes must be unique")
        self.first = phases[0]
        for phase in phases:
            if phase.next_phase and phase.next_phase not in self._by_name:
                raise ValueError(f"{phase.name} names unknown next phase {phase.next_phase}")

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Phase:
        return self._by_name[name]

    def for_task(self, task_id: str) -> Phase | None:
        """The phase a task belongs to, from its id alone (a callback costs no read)."""
        prefix, _, _ = task_id.partition("_")
        return self._by_prefix.get(prefix)

    def next_after(self, name: str) -> Phase | None:
        nxt = self._by_name[name].next_phase
        return self._by_name[nxt] if nxt else None

    def chain(self) -> list[Phase]:
        """The phases in the order a batch runs them."""
        order, phase = [], self.first
        while phase is not None and phase not in order:
            order.append(phase)
            phase = self.next_after(phase.name)
        return order


def default_registry() -> PhaseRegistry:
    return PhaseRegistry([TiffConversion()])
