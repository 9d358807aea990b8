"""How long a synthetic pool machine "converts" one task: a distribution parsed from one
setting (`FLY_EMULATOR_SYNTHETIC_TASK_S`) and drawn once per task.

Spellings (seconds): `3` (always 3), `uniform:2:4` (uniform between 2 and 4),
`normal:3:0.5` (mean 3, standard deviation 0.5, clipped at 0). Pure apart from its RNG;
never sleeps.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

KINDS = ("constant", "uniform", "normal")


@dataclass(frozen=True)
class TaskDuration:
    """A per-task duration distribution in seconds; `draw()` is thread-safe."""

    kind: str = "constant"
    a: float = 0.2  # constant: the value; uniform: low; normal: mean
    b: float = 0.0  # uniform: high; normal: standard deviation
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False,
                                  default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task duration kind must be one of {KINDS}, not {self.kind!r}")
        if self.a < 0 or (self.kind != "normal" and self.b < 0):
            raise ValueError("task durations must be >= 0")
        if self.kind == "uniform" and self.b < self.a:
            raise ValueError("uniform:LOW:HIGH needs LOW <= HIGH")
        if self.kind == "normal" and self.b < 0:
            raise ValueError("normal:MEAN:SD needs SD >= 0")
        object.__setattr__(self, "_rng", random.Random(self.seed))

    @classmethod
    def parse(cls, text: str | float | TaskDuration, seed: int | None = None) -> TaskDuration:
        """`3`, `uniform:2:4` or `normal:3:0.5` (ValueError for anything else)."""
        if isinstance(text, TaskDuration):
            return text
        if isinstance(text, int | float) and not isinstance(text, bool):
            return cls("constant", float(text), seed=seed)
        parts = str(text).strip().split(":")
        try:
            numbers = [float(p) for p in parts[1:]] if len(parts) > 1 else [float(parts[0])]
        except ValueError:
            raise ValueError(f"invalid task duration {text!r}: expected 3, uniform:2:4 or "
                             "normal:3:0.5") from None
        kind = "constant" if len(parts) == 1 else parts[0].strip().lower()
        if (kind == "constant" and len(numbers) != 1) or (kind != "constant" and len(numbers) != 2):
            raise ValueError(f"invalid task duration {text!r}: expected 3, uniform:2:4 or "
                             "normal:3:0.5")
        return cls(kind, numbers[0], numbers[1] if len(numbers) > 1 else 0.0, seed=seed)

    def draw(self) -> float:
        """One task's duration in seconds (never negative)."""
        if self.kind == "constant":
            return self.a
        with self._lock:
            if self.kind == "uniform":
                return self._rng.uniform(self.a, self.b)
            return max(0.0, self._rng.gauss(self.a, self.b))

    def describe(self) -> str:
        return f"{self.a:g}" if self.kind == "constant" else f"{self.kind}:{self.a:g}:{self.b:g}"
