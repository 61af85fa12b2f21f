"""Shared fixtures: the reference data folder, a loopback S3 (moto server), local Ray."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("FASTSAM2_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (DAVIS-2016 val, OSVOS predictions, J&F reference cases).

    Never copied into the repo; tests that need it skip with a clear message.
    """
    root = _shared_data_dir()
    if not (root / "davis2016-val").is_dir():
        pytest.skip(f"reference data not found at {root} (set FASTSAM2_SHARED_DATA to its location)")
    return root


_AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Never touch the user's weight cache; nothing is downloaded in tests."""
    os.environ["FASTSAM2_CACHE"] = str(tmp_path_factory.mktemp("fastsam2-cache"))


def processes_mentioning(text: str) -> list[int]:
    """PIDs (other than ours) whose command line mentions ``text``, e.g. a private Ray temp dir."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def kill_processes_mentioning(text: str, timeout_s: float) -> None:
    """SIGKILL every process whose command line mentions ``text`` until none is left (or time is up)."""
    import signal

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        left = processes_mentioning(text)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def write_disc_video(folder: Path, num_frames: int) -> Path:
    """A red disc moving over a random background, as JPEGs (160x120), for SAM2's own folder loader."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bg = np.array(Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).resize((160, 120)))
    yy, xx = np.mgrid[:120, :160]
    for t in range(num_frames):
        im = bg.copy()
        im[(xx - 48 - 6 * t) ** 2 + (yy - 60) ** 2 < 18**2] = (240, 30, 30)
        Image.fromarray(im).save(folder / f"{t:05d}.jpg")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback: moto in server mode, in its own process."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    # Session-wide, so Ray workers started later inherit them too.
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """AWS variables pointing at the loopback endpoint, plus a fresh bucket name."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """A local Ray instance with 2 CPUs, started after the AWS variables are set."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
