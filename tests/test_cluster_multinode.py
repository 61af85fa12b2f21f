"""Multi-node proof on loopback: a Ray head and two worker nodes (`ray start`, distinct ports,
`--resources` pinning the tracking stage to the workers), a job of 40 tiny videos sent
through `fastsam2-batch submit`, one worker's raylet killed by PID mid-run and a
replacement node started (as an autoscaler would), and every video done exactly once.

Kept light for a shared 2-core machine: 64x80 videos of 2 frames, SAM2 at 64 px with
random weights (masks are meaningless; the plumbing is the point), user prompts (no
proposal or caption models), one CPU per node. The timings go to stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from helpers import BIN, cli, free_port, kill_processes_mentioning, processes_mentioning, write_manifest
from fastsam2.storage import read_table
from fastsam2.synthetic import make_video, write_mp4

pytestmark = pytest.mark.slow

N_VIDEOS = 40


class LoopbackCluster:
    """A head and worker nodes on 127.0.0.1, token auth, each in its own process group."""

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.token = secrets.token_hex(32)
        self.token_file = Path(tmp) / "auth_token"
        self.token_file.write_text(self.token)
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.manager_ports: dict[str, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file),
                        RAY_USAGE_STATS_ENABLED="0", PATH=f"{BIN}{os.pathsep}{self.env.get('PATH', '')}")

    def _start(self, name: str, args: list[str]) -> None:
        port = free_port()
        # Nodes on one IP must not share worker port ranges (a raylet aborts on a taken port).
        first = 20000 + 500 * len(self.procs)
        cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
               "--node-manager-port", str(port), "--object-manager-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
               "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
               "--min-worker-port", str(first), "--max-worker-port", str(first + 499),
               "--num-cpus", "1", *args]
        log = open(Path(self.tmp) / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.manager_ports[name] = port

    def start_head(self) -> None:
        self._start("head", ["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                             "--include-dashboard", "true", "--dashboard-port", str(self.dashboard_port),
                             "--ray-client-server-port", str(free_port()), "--temp-dir", f"{self.tmp}/ray",
                             "--resources", json.dumps({"head": 1})])
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                requests.get(f"{self.address}/api/version", timeout=2)
                return
            except requests.ConnectionError:
                if self.procs["head"].poll() is not None:
                    break
                time.sleep(0.5)
        pytest.fail(f"Ray head did not start:\n{(Path(self.tmp) / 'head.log').read_text()[-3000:]}")

    def start_worker(self, name: str, wait: bool = True) -> None:
        """Start a worker node and (``wait``) until it has joined; one retry on a loaded machine."""
        expected = self.alive_trackers() + 1 if wait else 0
        for attempt in range(2):
            self._start(f"{name}-{attempt}" if attempt else name,
                        ["--address", f"127.0.0.1:{self.gcs_port}", "--resources", json.dumps({"tracker": 1})])
            if attempt:
                self.manager_ports[name] = self.manager_ports[f"{name}-{attempt}"]
            if not wait or self.wait_for_trackers(expected, timeout=90, fail=False):
                return
            proc = self.procs[f"{name}-{attempt}" if attempt else name]
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"worker {name} did not join:\n{(Path(self.tmp) / (name + '.log')).read_text()[-2000:]}")

    def alive_trackers(self) -> int:
        """Worker nodes alive with the tracker resource (Ray's state API on the dashboard)."""
        reply = requests.get(f"{self.address}/api/v0/nodes?limit=100", timeout=10,
                             headers={"Authorization": f"Bearer {self.token}"}).json()
        nodes = reply["data"]["result"]["result"]
        return sum(1 for n in nodes if n["state"] == "ALIVE" and "tracker" in (n.get("resources_total") or {}))

    def wait_for_trackers(self, n: int, timeout: float = 120, fail: bool = True) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.alive_trackers() >= n:
                    return True
            except (requests.RequestException, KeyError, ValueError):
                pass
            time.sleep(1)
        if fail:
            pytest.fail(f"{n} worker node(s) did not join")
        return False

    def raylet_pid(self, name: str) -> int:
        flag = f"--node_manager_port={self.manager_ports[name]}"
        pids = [p for p in processes_mentioning(flag) if "raylet" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert len(pids) == 1, f"raylet of {name}: {pids}"
        return pids[0]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # `ray start --block` stops its node on SIGINT
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
            except ProcessLookupError:
                pass
        for port in self.manager_ports.values():
            kill_processes_mentioning(f"--node_manager_port={port}", timeout_s=5)
        kill_processes_mentioning(self.tmp, timeout_s=10)


@pytest.fixture
def cluster():
    import ray._private.utils

    if ray._private.utils.get_dashboard_dependency_error():
        pytest.skip("the Jobs API needs ray[default]")
    tmp = tempfile.mkdtemp(prefix="fs2m-", dir="/tmp")  # short: Ray's socket paths have a length limit
    c = LoopbackCluster(tmp)
    try:
        c.start_head()
        c.start_worker("w1")
        c.start_worker("w2")
        yield c
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _dataset(folder: Path) -> Path:
    rows = []
    for i in range(N_VIDEOS):
        path = write_mp4(make_video(f"mn-{i:02d}", num_frames=2, height=64, width=80, seed=i), folder / f"mn-{i:02d}.mp4")
        rows.append({"uri": str(path), "point": "40,32"})
    return write_manifest(folder / "manifest.csv", rows, ["uri", "point"])


def test_forty_videos_on_three_nodes_survive_losing_a_worker(cluster, tmp_path):
    manifest = _dataset(tmp_path / "in")
    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps({
        "inputs": [str(manifest)], "output": str(out), "max_frames": 2,
        "resources": {
            # One tracking actor per worker node; the writer stays on the head.
            "track": {"num_cpus": 1, "min_actors": 2, "max_actors": 2, "batch_size": 1, "resources": {"tracker": 1}},
            "write": {"num_cpus": 0.25, "resources": {"head": 0.01}},
        },
        "progress_log_interval_s": 10,
    }))
    t0 = time.time()
    job = cli("submit", "--config", str(config), "--random-weights", "--image-size", "64", "--device", "cpu",
              "--address", cluster.address, "--auth-token-file", str(cluster.token_file), timeout=120)
    assert job.returncode == 0, job.stdout + job.stderr
    job_id = job.stdout.splitlines()[0]

    # Mid-run: once some videos are written, kill worker w2's raylet (its node is lost).
    deadline = time.time() + 600
    while len(list((out / "videos").glob("*.parquet"))) < 8 if (out / "videos").exists() else True:
        assert time.time() < deadline, "no progress before the kill"
        time.sleep(0.5)
    done_before = len(list((out / "videos").glob("*.parquet")))
    t_kill = time.time()
    os.kill(cluster.raylet_pid("w2"), signal.SIGKILL)
    cluster.start_worker("w3", wait=False)  # the replacement node an autoscaler would bring up

    status = cli("status", job_id, "--follow", "--address", cluster.address,
                 "--auth-token-file", str(cluster.token_file), timeout=900)
    wall = time.time() - t0
    logs = status.stdout
    assert status.returncode == 0, logs[-5000:] + status.stderr[-2000:]
    assert f"{N_VIDEOS} video(s) labelled, 0 failed" in logs, logs[-3000:]
    assert "progress: track" in logs  # the per-stage progress line reached the job's log

    videos = read_table(str(out), "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == [f"mn-{i:02d}" for i in range(N_VIDEOS)]  # each once
    masks = read_table(str(out), "masks").to_pylist()
    keys = [(m["video_id"], m["frame_idx"]) for m in masks]
    assert len(keys) == len(set(keys)) == 2 * N_VIDEOS  # no duplicate rows, none missing
    assert not (out / "errors").exists() or not list((out / "errors").glob("*.parquet"))
    print(json.dumps({"multinode_videos": N_VIDEOS, "done_before_kill": done_before,
                      "wall_s": round(wall, 1), "after_kill_s": round(time.time() - t_kill, 1)}))
