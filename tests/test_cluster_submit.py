"""`fastsam2-batch submit / status / stop` against a real Ray head with token authentication.

The fixture starts ``ray start --head`` on loopback (dashboard on 127.0.0.1, free ports, its
own temp dir and its own auth token, 2 CPUs) and stops it afterwards, killing only the
processes it started. The head gets no AWS variables: the job reaches the moto S3 endpoint
only through what ``submit`` forwards in the runtime env. Every CLI call is a subprocess
with a clean environment, as a user's shell would run it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import s3fs

from fastsam2.storage import read_table
from fastsam2.synthetic import make_video, write_mp4
from helpers import BIN, cli, click_rows, free_port, kill_processes_mentioning, write_manifest

pytestmark = pytest.mark.slow

ARGS = ["--random-weights", "--image-size", "256", "--device", "cpu"]
FRAMES = {"clu-a": 3, "clu-b": 2, "clu-c": 3}
SECRET = "moto-accepts-any-secret-0Zx9"


@dataclass
class Head:
    address: str
    token: str
    token_file: Path
    temp_dir: str


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head on loopback with token auth; stopped (only its own processes) at the end."""
    import ray._private.utils

    missing = ray._private.utils.get_dashboard_dependency_error()
    if missing:  # the Jobs API lives in the dashboard: it needs ray[default]
        pytest.skip(f"the Ray dashboard / Jobs API needs ray[default] ({missing}); install 'ray[data,default]'")
    tmp = tempfile.mkdtemp(prefix="fs2h-", dir="/tmp")  # short: Ray's socket paths have a length limit
    token = secrets.token_hex(32)
    token_file = Path(tmp) / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    dashboard = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
           "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
           "--port", str(free_port()), "--dashboard-port", str(dashboard),
           "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
           "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
           "--ray-client-server-port", str(free_port()),
           "--temp-dir", f"{tmp}/ray", "--num-cpus", "2"]
    log = open(Path(tmp) / "head.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                status = requests.get(f"{address}/api/version", timeout=2).status_code
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"Ray head did not start:\n{(Path(tmp) / 'head.log').read_text()[-3000:]}")
                time.sleep(0.5)
        assert status == 401, "the head must require a token"
        ok = requests.get(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert ok.status_code == 200, ok.text
        yield Head(address, token, token_file, tmp)
    finally:
        proc.send_signal(signal.SIGINT)  # `ray start --block` shuts its processes down on SIGINT
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this fixture started
        except ProcessLookupError:
            pass
        kill_processes_mentioning(tmp, timeout_s=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def s3_dataset(tmp_path, s3_env):
    """Three tiny mp4s and a manifest on the loopback S3."""
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    rows = []
    for seed, (name, n) in enumerate(FRAMES.items()):
        video = make_video(name, num_frames=n, height=64, width=80, seed=seed)
        fs.put(str(write_mp4(video, tmp_path / f"{name}.mp4")), f"{s3_env}/in/{name}.mp4")
        rows += click_rows(video, f"s3://{s3_env}/in/{name}.mp4")
    manifest = write_manifest(tmp_path / "manifest.csv", rows, ["uri", "obj_id", "point"])
    fs.put(str(manifest), f"{s3_env}/in/manifest.csv")
    return f"s3://{s3_env}/in/manifest.csv", f"s3://{s3_env}/out"


def test_submit_wait_runs_the_job_on_the_cluster_and_writes_to_s3(ray_head, s3_dataset, monkeypatch):
    manifest, out = s3_dataset
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto takes any; we check it never shows

    t0 = time.time()
    res = cli("submit", manifest, "--output", out, *ARGS, "--address", ray_head.address,
              "--forward-aws-credentials", "--wait", env_extra={"RAY_AUTH_TOKEN": ray_head.token})
    wall = time.time() - t0

    shown = res.stdout + res.stderr
    assert res.returncode == 0, shown[-4000:]
    job_id = res.stdout.splitlines()[0]
    assert job_id.startswith("fastsam2-")
    assert "3 video(s) labelled, 0 failed" in res.stdout  # the job's own summary, streamed back
    assert f"job {job_id} SUCCEEDED" in res.stderr
    assert SECRET not in shown and ray_head.token not in shown

    masks = read_table(out, "masks").to_pylist()
    keys = sorted((m["video_id"], m["frame_idx"]) for m in masks)
    assert keys == sorted((v, i) for v, n in FRAMES.items() for i in range(n))  # each exactly once
    videos = read_table(out, "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == sorted(FRAMES)
    assert {v["run_id"] for v in videos} == {job_id.removeprefix("fastsam2-")}
    print(f"submit --wait of {len(FRAMES)} videos on the local head: {wall:.1f}s")

    status = cli("status", job_id, "--address", ray_head.address, "--auth-token-file", str(ray_head.token_file))
    assert status.returncode == 0, status.stderr
    assert "status: SUCCEEDED" in status.stdout and f"output: {out}" in status.stdout
    stop = cli("stop", job_id, "--address", ray_head.address, "--auth-token-file", str(ray_head.token_file))
    assert stop.returncode == 0 and "was not running (SUCCEEDED)" in stop.stdout


def test_rejected_or_missing_token_fails_clearly(ray_head, tmp_path):
    wrong = "0" * 64
    res = cli("submit", "s3://b/in/m.csv", "-o", "s3://b/out", "--address", ray_head.address, "--auth-token", wrong)
    assert res.returncode == 1
    assert f"the Ray dashboard at {ray_head.address} rejected the auth token from --auth-token" in res.stderr
    assert wrong not in res.stdout + res.stderr and "Traceback" not in res.stderr

    empty_home = tmp_path / "home"
    empty_home.mkdir()
    res = cli("status", "anything", "--address", ray_head.address, home=empty_home)
    assert res.returncode == 1
    assert "requires an auth token and none was sent" in res.stderr and "Traceback" not in res.stderr

    # The token file in the (fresh) home directory is found without any flag or variable.
    (empty_home / ".ray").mkdir()
    shutil.copy(ray_head.token_file, empty_home / ".ray" / "auth_token")
    res = cli("status", "no-such-job", "--address", ray_head.address, home=empty_home)
    assert res.returncode == 1 and "no job 'no-such-job'" in res.stderr


def test_a_job_that_cannot_run_fails_submit_wait_and_status(ray_head, s3_env):
    res = cli("submit", f"s3://{s3_env}/nothing/manifest.csv", "-o", f"s3://{s3_env}/out", *ARGS,
              "--address", ray_head.address, "--auth-token-file", str(ray_head.token_file),
              "--forward-aws-credentials", "--wait")
    assert res.returncode == 2, res.stdout + res.stderr  # submit --wait exits with the job's own status
    job_id = res.stdout.splitlines()[0]
    assert "manifest not found" in res.stdout + res.stderr
    assert f"job {job_id} FAILED" in res.stderr
    status = cli("status", job_id, "--address", ray_head.address, "--auth-token-file", str(ray_head.token_file))
    assert status.returncode == 1 and "status: FAILED" in status.stdout


def test_stop_a_submitted_job(ray_head, s3_dataset):
    manifest, out = s3_dataset
    auth = ["--address", ray_head.address, "--auth-token-file", str(ray_head.token_file)]
    res = cli("submit", manifest, "--output", out + "-stopped", *ARGS, *auth, "--forward-aws-credentials",
              "--wait", "--wait-timeout", "2")
    assert res.returncode == 124, res.stdout + res.stderr  # gave up waiting; the job goes on
    job_id = res.stdout.splitlines()[0]
    assert job_id.startswith("fastsam2-") and f"job {job_id} still" in res.stderr

    stop = cli("stop", job_id, "--wait", *auth)
    assert stop.returncode == 0, stop.stderr
    assert "stop requested (STOPPED)" in stop.stdout
    status = cli("status", job_id, *auth)
    assert status.returncode == 1 and "status: STOPPED" in status.stdout
