"""Shared fixtures: the reference data folder, a loopback S3 (moto server), local Ray."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import free_port, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (DAVIS-2016 val, OSVOS predictions, J&F reference cases).

    Never copied into the repo; tests that need it skip with a clear message.
    """
    root = shared_data_dir()
    if not (root / "davis2016-val").is_dir():
        pytest.skip(f"reference data not found at {root} (set FASTSAM2_SHARED_DATA to its location)")
    return root


_AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Never touch the user's weight cache; nothing is downloaded in tests."""
    os.environ["FASTSAM2_CACHE"] = str(tmp_path_factory.mktemp("fastsam2-cache"))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback: moto in server mode, in its own process."""
    port = free_port()
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
