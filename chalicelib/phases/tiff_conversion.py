"""The TIFF conversion phase: one Fly machine per TIFF, converting it to JPEG in R2.

Which worker errors are permanent (fail at once, no retry) is decided from the
callback's `error_code` by the table in `worker_errors`; the wording counts only for a
worker that sends no code.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidCallbackError
from ..settings import Settings
from ..transitions import Outcome
from . import worker_errors
from .base import Discovery, FileEntry, MachineContext, Phase, TaskSpec, TaskView, r2_credentials
from .output_keys import TIFF_SUFFIX, OutputPlanner, jpeg_name

NAME = "TIFF_CONVERSION"
PERMANENT_ERROR = worker_errors.PERMANENT_WORDING  # the fallback for code-less callbacks


def is_tiff(file_name: str) -> bool:
    return bool(TIFF_SUFFIX.search(file_name or ""))


def is_permanent(error: str, error_code: object = None) -> bool:
    return worker_errors.is_permanent(error_code, error)


class TiffConversion(Phase):
    name = NAME
    task_prefix = "tiff"
    machine_prefix = "tiff"
    log_prefix = "[TiffConversion]"
    sizes_machine_from_tiff = True

    def __init__(self, next_phase: str | None = None) -> None:
        self.next_phase = next_phase

    def batch_size(self, settings: Settings) -> int:
        return settings.batch_size_tiff_conversion

    def alarm_delay_ms(self, settings: Settings) -> int:
        return settings.alarm_delay_tiff_conversion_ms

    def task_timeout_ms(self, settings: Settings) -> int:
        return settings.task_timeout_tiff_conversion_ms

    def discover(self, discovery: Discovery) -> list[TaskSpec]:
        """One task per TIFF, each with its output key decided here (output_keys.py)."""
        files = list(discovery.files)
        planner = OutputPlanner((str(f.info.get("r2_key", "")), str(f.info.get("logical_path") or ""))
                                for f in files)
        specs: dict[str, TaskSpec] = {}
        for file in files:
            if not is_tiff(str(file.info.get("file_name", ""))):
                continue
            key = file.info["r2_key"]
            task_id = self.task_id(discovery.batch_id, key)
            if task_id in specs:
                continue
            out = planner.plan(key, str(file.info.get("logical_path") or ""))
            specs[task_id] = TaskSpec(task_id, key, file.position, data={"output_logical_path": out.logical_path},
                                      output_r2_key=out.r2_key)
        return list(specs.values())

    @staticmethod
    def output_key(task: TaskView) -> str:
        """The key decided at discovery; the worker's own rule for a task from before."""
        return task.planned_output_key or jpeg_name(task.input_r2_key)

    def machine_env(self, batch_id: str, task: TaskView, attempt: int, ctx: MachineContext) -> dict[str, str]:
        """contracts §3. By default the machine gets presigned URLs for its one input and
        its one output instead of the R2 account's keys; MACHINE_R2_CREDENTIALS=true (or no
        way to presign) gives it the seed's keys, for the seed's own worker."""
        settings = ctx.settings
        env = {
            "TASK_ID": task.task_id,
            "BATCH_ID": batch_id,
            "INPUT_R2_KEY": task.input_r2_key,
            "R2_BUCKET": settings.r2_bucket,
            "CALLBACK_URL": ctx.callback_url,
            "ATTEMPT": str(attempt),
            "OUTPUT_R2_KEY": self.output_key(task),
        }
        if ctx.callback_token:
            env["CALLBACK_TOKEN"] = ctx.callback_token
        urls = self._presigned(task, ctx)
        if urls is None:
            env.update(r2_credentials(settings, ctx.secrets))
        else:
            env["INPUT_URL"], env["OUTPUT_URL"] = urls
        return env

    def assignment(self, batch_id: str, task: TaskView, attempt: int, ctx: MachineContext) -> dict[str, Any]:
        """docs/pool.md: one attempt handed to a pool machine, the same facts as
        `machine_env` gives a single-mode machine (a pool machine has the R2 keys in its
        environment when it gets no presigned URLs)."""
        answer: dict[str, Any] = {
            "task_id": task.task_id, "batch_id": batch_id, "attempt": attempt,
            "input_r2_key": task.input_r2_key, "output_r2_key": self.output_key(task),
            "r2_bucket": ctx.settings.r2_bucket, "callback_url": ctx.callback_url,
            "callback_token": ctx.callback_token,
        }
        urls = self._presigned(task, ctx)
        if urls is not None:
            answer["input_url"], answer["output_url"] = urls
        return answer

    def _presigned(self, task: TaskView, ctx: MachineContext) -> tuple[str, str] | None:
        """The input's GET and the output's PUT, valid for the attempt's life; None when the
        machine is to use the R2 keys instead."""
        settings = ctx.settings
        if settings.machine_r2_credentials or ctx.presign is None:
            return None
        expires_s = (self.task_timeout_ms(settings) + settings.presign_margin_ms) // 1000
        return (ctx.presign("get", task.input_r2_key, expires_s),
                ctx.presign("put", self.output_key(task), expires_s))

    def interpret_callback(self, body: Mapping[str, Any]) -> Outcome:
        if body["status"] == "error":
            error, code = body["error"], body.get("error_code")
            code = code if isinstance(code, str) and code else None
            needed = body.get("memory_mb") if code == worker_errors.NEEDS_MEMORY else None
            if needed is not None and (not isinstance(needed, int) or isinstance(needed, bool)
                                       or not 0 < needed < 2**31):
                raise InvalidCallbackError("memory_mb must be a positive integer")
            return Outcome(ok=False, error=error, permanent=is_permanent(error, code), error_code=code,
                           needed_memory_mb=needed)
        key, name, size = body.get("output_r2_key"), body.get("output_file_name"), body.get("output_file_size")
        if not isinstance(key, str) or not key or not isinstance(name, str) or not name:
            raise InvalidCallbackError("success callback needs output_r2_key and output_file_name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidCallbackError("output_file_size must be a non-negative integer")
        return Outcome(
            ok=True,
            output={"output_r2_key": key, "output_file_name": name, "output_file_size": size},
            performance=_performance(body.get("performance")),
        )

    def final_entry(self, entry: dict[str, Any], file: FileEntry, task: TaskView | None) -> dict[str, Any]:
        """contracts §5: a converted TIFF becomes its JPEG; anything else stays as it was."""
        if task is None or task.status != "completed" or not task.output_r2_key:
            return entry
        converted = {k: v for k, v in entry.items() if k != "cid"}
        logical_path = task.data.get("output_logical_path") or jpeg_name(entry.get("logical_path") or "")
        converted.update(
            r2_key=task.output_r2_key,
            logical_path=logical_path,
            file_name=posixpath.basename(task.output_r2_key),
            file_size=task.output_file_size or 0,
            content_type="image/jpeg",
            source_file=file.info.get("file_name"),
            preprocessor_tags=["TiffConverter"],
        )
        return converted


def _performance(raw: object) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidCallbackError("performance must be an object")
    perf: dict[str, int] = {}
    for name, value in raw.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise InvalidCallbackError(f"performance.{name} must be a non-negative number")
        perf[str(name)] = int(value)
    return perf
