"""Shared fixtures: the reference data folder, a loopback S3 (moto server), local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import AWS_VARS, shared_data_dir, start_moto


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (DAVIS-2016 val, OSVOS predictions, J&F reference cases).

    Never copied into the repo; tests that need it skip with a clear message.
    """
    root = shared_data_dir()
    if not (root / "davis2016-val").is_dir():
        pytest.skip(f"reference data not found at {root} (set FASTSAM2_SHARED_DATA to its location)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Never touch the user's weight cache; nothing is downloaded in tests."""
    os.environ["FASTSAM2_CACHE"] = str(tmp_path_factory.mktemp("fastsam2-cache"))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback: moto in server mode, in its own process."""
    saved = {k: os.environ.get(k) for k in AWS_VARS}
    try:
        proc, url = start_moto()
    except RuntimeError as exc:
        pytest.fail(str(exc))
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
