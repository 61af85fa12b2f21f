"""Faults lose nothing: a SAM2 actor killed mid-video, transient S3 write errors, a driver killed mid-run.

All on real parts: local Ray (2 CPUs), loopback S3 (moto server), random-weight SAM2.1
hiera-t at 256 px, tiny synthetic videos. The one fake is ``FlakyS3FileSystem`` below: a
real s3fs filesystem (talking to moto) whose first N uploads raise a connection reset.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest
import s3fs
from click.testing import CliRunner

from fastsam2 import storage
from fastsam2.cli import main
from fastsam2.output import write_video
from fastsam2.storage import done_video_ids, read_table
from fastsam2.synthetic import write_clip_dataset
from helpers import kill_processes_mentioning
from fault_injection import killing_track_stage, use_stage

pytestmark = pytest.mark.slow

ARGS = ["--random-weights", "--image-size", "256", "--device", "cpu"]


def assert_each_video_exactly_once(out: str, frames: dict[str, int]) -> None:
    """Every video: one videos/ row, one frames/ row per frame, one mask per frame; nothing else."""
    masks = read_table(out, "masks").to_pylist()
    keys = [(m["video_id"], m["obj_id"], m["frame_idx"]) for m in masks]
    assert len(keys) == len(set(keys)), "duplicate mask rows"
    assert sorted(keys) == sorted((v, 1, i) for v, n in frames.items() for i in range(n))
    frame_rows = [(r["video_id"], r["frame_idx"]) for r in read_table(out, "frames").to_pylist()]
    assert sorted(frame_rows) == sorted((v, i) for v, n in frames.items() for i in range(n))
    videos = [r["video_id"] for r in read_table(out, "videos").to_pylist()]
    assert sorted(videos) == sorted(frames)
    assert read_table(out, "errors").num_rows == 0


# --------------------------------------------------------------------------- actor killed


def test_tracking_actor_killed_mid_video_is_restarted_and_nothing_is_lost(ray_local, s3_env, tmp_path, monkeypatch):
    frames = {"kill-a": 4, "kill-b": 4, "kill-c": 3}
    manifest = write_clip_dataset(tmp_path, frames)
    marker = tmp_path / "fault-fired"
    use_stage(monkeypatch, killing_track_stage(kill_at_frame=2, marker=marker))
    out = f"s3://{s3_env}/out"

    result = CliRunner().invoke(main, ["run", str(manifest), "-o", out, *ARGS])

    assert result.exit_code == 0, result.output
    # The fault really fired: the actor process died after tracking 2 frames of a video ...
    video, at = marker.read_text().split()
    assert video in frames and int(at) == 2
    # ... Ray restarted it, the video was tracked again from the start, and the job completed.
    assert "3 video(s) labelled, 0 failed" in result.output
    assert_each_video_exactly_once(out, frames)


# --------------------------------------------------------------------------- S3 errors on write


class FlakyS3FileSystem(s3fs.S3FileSystem):
    """FAKE (fault injector): a real s3fs filesystem whose first ``failures`` uploads raise
    ``ConnectionResetError``, as a dropped connection to S3 does. Everything else is real."""

    failures = 0
    attempts = 0

    def pipe_file(self, path, value, **kwargs):
        type(self).attempts += 1
        if type(self).attempts <= type(self).failures:
            raise ConnectionResetError(104, "Connection reset by peer (injected)")
        return super().pipe_file(path, value, **kwargs)


@pytest.fixture
def flaky_s3(monkeypatch, s3_endpoint):
    class Flaky(FlakyS3FileSystem):
        pass

    sleeps: list[float] = []
    monkeypatch.setattr(storage, "filesystem_for",
                        lambda uri, opts=None: Flaky(endpoint_url=s3_endpoint, use_listings_cache=False, skip_instance_cache=True))
    # Record the backoff instead of sleeping through it.
    monkeypatch.setattr(storage, "time", type("T", (), {"sleep": staticmethod(sleeps.append)}))
    Flaky.sleeps = sleeps
    return Flaky


def _one_video_tables(video_id: str) -> dict[str, pa.Table]:
    from fastsam2.schema import table_from_rows

    masks = [{"video_id": video_id, "obj_id": 1, "frame_idx": i, "height": 4, "width": 4, "rle": "0 16",
              "area": 0, "bbox": [0.0, 0.0, 0.0, 0.0], "score": 0.0} for i in range(2)]
    frames = [{"video_id": video_id, "frame_idx": i, "ms_total": 1.0} for i in range(2)]
    videos = [{"video_id": video_id, "uri": f"mem://{video_id}", "status": "ok", "num_frames": 2}]
    return {"masks": table_from_rows("masks", masks), "frames": table_from_rows("frames", frames),
            "videos": table_from_rows("videos", videos)}


def test_transient_s3_write_errors_are_retried(flaky_s3, s3_env):
    flaky_s3.failures = 2  # the first two PUTs of this video fail, the third succeeds
    out = f"s3://{s3_env}/retry"

    write_video(out, "vid", _one_video_tables("vid"))

    assert flaky_s3.attempts == 2 + 3  # masks: 2 failures + 1 success; frames, videos: 1 each
    assert flaky_s3.sleeps == [0.5, 1.0]  # exponential backoff between the attempts
    real = s3fs.S3FileSystem(skip_instance_cache=True)
    assert sorted(p.split("/", 2)[2] for p in real.find(f"{s3_env}/retry")) == [
        "frames/vid.parquet", "masks/vid.parquet", "videos/vid.parquet"]
    assert read_table(out, "masks").num_rows == 2 and done_video_ids(out) == {"vid"}


def test_persistent_s3_write_errors_fail_without_marking_the_video_done(flaky_s3, s3_env):
    flaky_s3.failures = 10**6
    out = f"s3://{s3_env}/down"

    with pytest.raises(ConnectionResetError):
        write_video(out, "vid", _one_video_tables("vid"))

    assert flaky_s3.attempts == 4 and flaky_s3.sleeps == [0.5, 1.0, 2.0]
    assert done_video_ids(out) == set()  # a later run redoes it


# --------------------------------------------------------------------------- driver killed


def _kill_leftovers(ray_tmp: str, group: int | None = None) -> None:
    """Kill what a run started: its own process group, then anything still using its Ray temp dir."""
    if group is not None and group > 1:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_processes_mentioning(ray_tmp, timeout_s=15)


def test_driver_killed_mid_run_then_rerun_resumes_without_duplicates(s3_env, tmp_path):
    frames = {f"drv-{i}": 4 for i in range(6)}
    manifest = write_clip_dataset(tmp_path, frames)
    out = f"s3://{s3_env}/resume"
    ray_tmp = tempfile.mkdtemp(prefix="fs2d-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["RAY_TMPDIR"] = ray_tmp  # its own local Ray instance, isolated from any other on this machine
    cmd = [str(Path(sys.executable).parent / "fastsam2-batch"), "run", str(manifest), "-o", out, *ARGS]
    s3 = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not done_video_ids(out) and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, f"driver ended before it could be killed:\n{first.stdout.read().decode()}"
        os.kill(first.pid, signal.SIGKILL)  # the driver only: no chance to clean up
        first.wait(timeout=30)
    finally:
        _kill_leftovers(ray_tmp, group=first.pid)  # start_new_session: its pid is its group id
    done_before = done_video_ids(out)
    assert 1 <= len(done_before) < len(frames), done_before
    stamps = {p: s3.info(p)["LastModified"] for p in s3.find(f"{s3_env}/resume")}

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    _kill_leftovers(ray_tmp)  # a clean exit leaves nothing; make sure
    shutil.rmtree(ray_tmp, ignore_errors=True)

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{len(done_before)} already done" in second.stdout
    assert f"{len(frames) - len(done_before)} video(s) labelled, 0 failed" in second.stdout
    assert_each_video_exactly_once(out, frames)
    for vid in done_before:  # finished videos were not redone
        for table in ("masks", "frames", "videos"):
            key = f"{s3_env}/resume/{table}/{vid}.parquet"
            assert s3.info(key)["LastModified"] == stamps[key]
