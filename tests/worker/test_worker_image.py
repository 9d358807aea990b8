"""What the worker's image holds, checked without a container engine: a fresh virtual
environment with only worker/requirements.txt, only the worker/ folder copied beside it
(as the Dockerfile's `COPY . /app/worker/`), converting a TIFF in contract mode against
moto's S3 and a callback receiver. A dependency missing from worker/requirements.txt or an
import from outside worker/ (chalicelib, arke_local, tests) fails here.

Slow (~30 s with a warm pip cache: pip's own cache, ~/.cache/pip or PIP_CACHE_DIR, keeps
the wheels between runs); `make test` runs it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
import worker_tiffmaker as tm
from PIL import Image
from worker_helpers import BUCKET, REPO

pytestmark = pytest.mark.slow

# The Dockerfile's own check after `pip install` (`python -c "import ..."`), read from it.
DOCKERFILE_IMPORTS = re.search(r'python -c "(import [^"]+)"', (REPO / "worker" / "Dockerfile").read_text())[1]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """/app of the image: venv/ (the image's site-packages) and worker/ (the copied folder)."""
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    venv = app / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # pip from this interpreter's installation runs for the new venv (no pip inside it, no
    # ensurepip download); installs land only in the new venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                           "--disable-pip-version-check", "-r", str(REPO / "worker" / "requirements.txt")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shutil.copytree(REPO / "worker", app / "worker",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return app


def image_env(base: dict) -> dict:
    """No PYTHONPATH, no path back into the repo: only what the image would have."""
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_in_image(image: Path, args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(image / "venv" / "bin" / "python"), *args], cwd=image, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_dockerfile_import_check_passes_and_nothing_outside_worker_is_reachable(image):
    env = image_env(dict(os.environ))
    assert run_in_image(image, ["-c", DOCKERFILE_IMPORTS], env).returncode == 0
    probe = ("import importlib.util as u, sys; "
             "print([m for m in ('chalicelib', 'arke_local', 'pytest', 'moto') if u.find_spec(m)])")
    result = run_in_image(image, ["-c", probe], env)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_contract_mode_converts_a_tiff_from_the_image(image, s3, worker_env, receiver):
    key = "staging/batch_t/box/scan.tiff"
    buf = io.BytesIO()
    tifffile.imwrite(buf, tm.quadrant_rgb(), photometric="rgb", compression="lzw")
    s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue(), ContentType="image/tiff")

    result = run_in_image(image, ["-m", "worker"], image_env(worker_env(key)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(receiver.requests) == 1
    body = receiver.requests[0]["body"]
    assert body["status"] == "success" and body["output_r2_key"] == "staging/batch_t/box/scan.jpg"
    jpeg = s3.get_object(Bucket=BUCKET, Key=body["output_r2_key"])["Body"].read()
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG" and im.size == (tm.W, tm.H)
    # the worker that ran is the copy, not the repo's
    assert str(REPO) not in result.stdout + result.stderr
