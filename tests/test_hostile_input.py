"""Hostile or odd input without Ray: no code runs from a file, nothing is written outside the
output root, nothing is lost silently, and every bad input is one line found before Ray starts.

Each test reproduces one item of issue 10's "What was seen" (it failed on the code before the fix).
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fastsam2 import storage
from fastsam2.cli import main
from fastsam2.config import JobConfig
from fastsam2.job import entry as run_job
from fastsam2.job import sdk
from fastsam2.job import staging as job_staging
from fastsam2.output import UnsafeOutputPath, table_uri, write_video
from fastsam2.pipeline import EXIT_OK, EXIT_VIDEOS_FAILED, RunSummary, exit_code, plan_tasks
from fastsam2.schema import table_from_rows
from fastsam2.sources import FrameReader, VideoReadError, discover
from fastsam2.storage import done_video_ids, read_table, with_retries
from helpers import invoke, write_disc_video, write_manifest

SECRET = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"


class _RunsCode:
    """A pickle payload: unpickling it calls os.system (what a hostile .pt file does)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def evil_weights(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "router.pt"
    torch.save({"format": "fastsam2-router-v1", "payload": _RunsCode(f"touch {marker}")}, path)
    return path, marker


@pytest.fixture
def frames(tmp_path) -> Path:
    return write_disc_video(tmp_path / "clip", 2)


# --------------------------------------------------------------------------- 1. code from files


def test_malicious_router_weights_run_nothing(evil_weights, tmp_path):
    from fastsam2.models.checkpoint import UnsafeCheckpoint, load_checkpoint
    from fastsam2.tracking.router import Router, build_router

    path, marker = evil_weights
    with pytest.raises(UnsafeCheckpoint, match="asks to run code"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpoint):
        Router.from_weights(path)
    with pytest.raises(UnsafeCheckpoint):
        build_router(semantic="none", router_weights=path)
    assert not marker.exists()


def test_malicious_router_weights_on_the_cli_is_one_line_before_ray(evil_weights, frames, tmp_path):
    path, marker = evil_weights
    start = time.monotonic()
    r = invoke("run", frames, "-o", tmp_path / "out", "--random-weights", "--point", "5,5",
               "--router-weights", path)
    assert r.exit_code == 2, r.output
    assert "--router-weights" in r.output and "run code" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not marker.exists()
    assert time.monotonic() - start < 20  # found on the driver, not in a tracking actor


def test_router_weights_saved_by_train_router_still_load(tmp_path):
    from fastsam2.tracking.router import Router, RouterConfig, RouterMLP

    router = Router(RouterConfig(semantic="none"), mlp=RouterMLP(4, 8))
    router.save(tmp_path / "r.pt", sam2_config="sam2.1_hiera_t", image_size=256, clip_model=None)
    again = Router.from_weights(tmp_path / "r.pt")
    assert again.config.semantic == "none" and again.mlp is not None


def test_yaml_config_cannot_construct_objects(tmp_path, frames):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f'output: {tmp_path / "o"}\nx: !!python/object/apply:os.system ["touch {marker}"]\n')
    r = invoke("run", frames, "--config", cfg, "--random-weights")
    assert r.exit_code == 2 and "not valid YAML" in r.output and "Traceback" not in r.output
    assert not marker.exists()


# --------------------------------------------------------------------------- 2, 3. ids and paths


def test_write_video_refuses_paths_outside_the_root(tmp_path):
    root = tmp_path / "out"
    tables = {"errors": table_from_rows("errors", [{"video_id": "x", "uri": "u"}])}
    for bad in ("../../escape", "a/b", "/abs/p", ".hidden", "..", "x" * 300, ""):
        with pytest.raises(UnsafeOutputPath):
            write_video(str(root), bad, tables)
    # A symlinked table folder that points outside is refused too.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root.mkdir()
    (root / "masks").symlink_to(outside)
    with pytest.raises(UnsafeOutputPath, match="outside the output root"):
        table_uri(str(root), "masks", "fine")
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.parquet").exists()


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    return write_manifest(tmp_path / "m.csv", rows)


def test_manifest_ids_are_safe_unique_and_keep_the_users_name(tmp_path):
    given = ["../../x", "..\\x", "/abs/p", "a/b", "b", ".hidden", "y" * 300, "dup", "dup", "dup-1", "Case", "case"]
    rows = [{"uri": f"v{i}.mp4", "video_id": v, "point": "1,1"} for i, v in enumerate(given)]
    tasks = discover([str(_manifest(tmp_path, rows))])
    ids = [t.video_id for t in tasks]
    assert len({i.lower() for i in ids}) == len(given)
    for t in tasks:
        assert table_uri(str(tmp_path / "o"), "masks", t.video_id)  # every id is writable under the root
    by_uri = {os.path.basename(t.uri): t for t in tasks}
    assert by_uri["v4.mp4"].video_id == "b" and by_uri["v4.mp4"].source_id is None  # unchanged: not repeated
    assert by_uri["v3.mp4"].video_id == "a_b" and by_uri["v3.mp4"].source_id == "a/b"
    assert by_uri["v9.mp4"].video_id == "dup-1"
    # Reversed rows give the same ids: nothing depends on input order.
    again = discover([str(_manifest(tmp_path, rows[::-1]))])
    assert {t.uri: t.video_id for t in again} == {t.uri: t.video_id for t in tasks}


def test_done_is_decided_by_the_stored_id_not_a_file_name(tmp_path, monkeypatch):
    root = tmp_path / "out"
    other = tmp_path / "b.mp4"  # a different video that happens to be called "b"
    tables = {
        "masks": table_from_rows("masks", []), "frames": table_from_rows("frames", []),
        "videos": table_from_rows("videos", [{"video_id": "b", "uri": str(tmp_path / "a" / "b.mp4"), "status": "ok"}]),
    }
    write_video(str(root), "b", tables)
    cfg = JobConfig(inputs=[str(other), str(tmp_path / "a" / "b.mp4")], output=str(root))
    tasks, todo = plan_tasks(cfg)
    assert [t.uri for t in todo] == [str(other)]  # only the recorded URI is done
    assert todo[0].video_id != "b"  # and the new one cannot take the recorded id
    monkeypatch.chdir(tmp_path)  # the same video spelled as a relative path is the same video
    _, todo = plan_tasks(JobConfig(inputs=["a/b.mp4"], output=str(root)))
    assert todo == []


def test_file_uris_in_inputs_and_manifests(tmp_path, frames):
    rows = [{"uri": f"file://{frames}", "point": "5,5"}]
    tasks = discover([f"file://{_manifest(tmp_path, rows)}"])
    assert tasks[0].uri == str(frames) and tasks[0].kind == "frames"
    assert len(list(FrameReader(tasks[0]))) == 2
    assert JobConfig(inputs=["x"], output=f"file://{tmp_path}/o").output == f"{tmp_path}/o"


# --------------------------------------------------------------------------- 5. writes


class _FullDisk:
    """``open`` for fastsam2.storage that fails like a full disk while writing file number ``fail_on``."""

    def __init__(self, fail_on: int, err: int = errno.ENOSPC):
        self.calls, self.fail_on, self.err = 0, fail_on, err

    def __call__(self, path, mode="r", *a, **kw):
        self.calls += 1
        f = open(path, mode, *a, **kw)
        if self.calls < self.fail_on:
            return f
        real_write = f.write

        def write(data):
            real_write(data[: len(data) // 2])  # half a Parquet file lands on disk, then the disk is full
            raise OSError(self.err, os.strerror(self.err))

        f.write = write
        return f


def _ok_tables(vid: str):
    return {"masks": table_from_rows("masks", [{"video_id": vid, "obj_id": 1, "frame_idx": 0, "rle": ""}]),
            "frames": table_from_rows("frames", [{"video_id": vid, "frame_idx": 0}]),
            "videos": table_from_rows("videos", [{"video_id": vid, "uri": "u", "status": "ok"}])}


@pytest.mark.parametrize("fail_on", [1, 3])  # masks/ (first file) or videos/ (the done marker, last)
def test_full_disk_leaves_no_temp_files_no_retries_and_no_rows(tmp_path, monkeypatch, fail_on):
    from fastsam2.eval.io import read_run_table

    root = str(tmp_path / "out")
    disk = _FullDisk(fail_on)
    monkeypatch.setattr(storage, "open", disk, raising=False)
    monkeypatch.setattr(storage.time, "sleep", lambda s: pytest.fail("a full disk was retried"))
    with pytest.raises(OSError) as info:
        write_video(root, "v", _ok_tables("v"))
    assert info.value.errno == errno.ENOSPC and disk.calls == fail_on  # one attempt, no retry
    left = [str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file()]
    assert left == []  # no *.tmp, no partial Parquet, no masks/ or frames/ of a video that is not done
    assert read_table(root, "masks").num_rows == 0 and done_video_ids(root) == set()
    assert read_run_table(root, "masks") is None and read_run_table(root, "frames") is None


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.ENAMETOOLONG, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.ENOTDIR])
def test_errors_no_retry_can_fix_are_not_retried(code, monkeypatch):
    calls = []
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)

    def fail():
        calls.append(1)
        raise OSError(code, os.strerror(code))

    with pytest.raises(OSError):
        with_retries(fail, "write")
    assert len(calls) == 1

    def reset():  # a transient error still gets its retries
        calls.append(1)
        raise ConnectionResetError(errno.ECONNRESET, "reset by peer")

    calls.clear()
    with pytest.raises(ConnectionResetError):
        with_retries(reset, "write")
    assert len(calls) == 4


# --------------------------------------------------------------------------- 4. secrets


def test_submit_ships_no_storage_secrets(tmp_path):
    from fastsam2.cli.options import build_config

    opts = {"key": "AKIAEXAMPLE", "secret": SECRET, "token": SECRET, "endpoint_url": "http://s3",
            "client_kwargs": {"aws_secret_access_key": SECRET, "region_name": "eu"}, "sse_kms_key_id": "k1"}
    cfg = build_config(("s3://b/in/",), output="s3://b/out", storage_options=json.dumps(opts))
    staging = job_staging.stage_job(cfg, "installed", tmp_path / "job")
    shipped = (staging / "job.json").read_text()
    assert SECRET not in shipped and "AKIAEXAMPLE" not in shipped
    assert oct((staging / "job.json").stat().st_mode & 0o777) == oct(0o600)
    data = json.loads(shipped)["storage_options"]
    assert data == {"endpoint_url": "http://s3", "client_kwargs": {"region_name": "eu"}, "sse_kms_key_id": "k1"}


def test_submit_notes_withheld_credentials(monkeypatch):
    for k in (*job_staging.AWS_SETTINGS, *job_staging.AWS_CREDENTIALS):
        monkeypatch.delenv(k, raising=False)
    r = CliRunner().invoke(main, ["submit", "s3://b/in/", "-o", "s3://b/out", "--dry-run", "--package", "installed",
                                  "--storage-options", json.dumps({"key": "AKIAEXAMPLE", "secret": SECRET})])
    assert r.exit_code == 0, r.output
    assert SECRET not in r.output and "AKIAEXAMPLE" not in r.output
    assert "key, secret are not shipped" in r.output and "instance role" in r.output


def test_config_errors_name_the_field_never_the_value(tmp_path, capsys, monkeypatch):
    bad = {"inputs": ["x"], "output": "o", "storage_options": {"secret": SECRET}, "modle": {"secret": SECRET}}
    assert run_job.main([json.dumps(bad)]) == 2
    err = capsys.readouterr().err
    assert "modle" in err and SECRET not in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"inputs: [x]\noutput: o\nstorage_options: {{secret: {SECRET}}}\nmodle: {SECRET}\n")
    r = invoke("run", "--config", cfg)
    assert r.exit_code == 2 and "modle" in r.output and SECRET not in r.output
    cfg.write_text(f"inputs: [x]\nstorage_options: {{secret: {SECRET}\n  bad: [\n")  # YAML syntax error
    r = invoke("run", "--config", cfg)
    assert r.exit_code == 2 and "line" in r.output and SECRET not in r.output and "Traceback" not in r.output
    assert run_job.main([str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and SECRET not in err


def test_submit_wait_follows_the_jobs_exit_code():
    assert sdk.job_exit_code("Job entrypoint command failed with exit code 3, last available logs: ...") == 3
    assert sdk.job_exit_code("Job entrypoint command failed with exit code 2. No logs available.") == 2
    assert sdk.job_exit_code("Job was stopped") == 1


# --------------------------------------------------------------------------- 6. exit codes


def test_exit_code_is_non_zero_when_any_video_failed(tmp_path, capsys, monkeypatch):
    assert exit_code(RunSummary("o", "r", total=3, ok=2, failed=1)) == EXIT_VIDEOS_FAILED
    assert exit_code(RunSummary("o", "r", total=3, ok=0, skipped=3)) == EXIT_OK
    import fastsam2.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_pipeline", lambda cfg, progress: RunSummary(cfg.output, cfg.run_id, 2, 0, 1, 1))
    assert run_job.main([json.dumps({"inputs": ["x"], "output": str(tmp_path / "o")})]) == EXIT_VIDEOS_FAILED


# --------------------------------------------------------------------------- 7. fail fast


@pytest.mark.parametrize("case", ["output-is-file", "output-under-file", "unknown-config",
                                  "unknown-config-real-weights", "max-frames", "bad-cell"])
def test_bad_setup_is_one_line_before_ray(case, tmp_path, frames):
    args = [frames, "-o", tmp_path / "out", "--random-weights", "--point", "5,5"]
    if case == "output-is-file":
        (tmp_path / "out").write_text("x")
        want = "is a file"
    elif case == "output-under-file":
        (tmp_path / "f").write_text("x")
        args[2] = tmp_path / "f" / "out"
        want = "is a file"
    elif case == "unknown-config":
        args += ["--sam2-config", "sam9_hiera_zz"]
        want = "unknown SAM2 config"
    elif case == "unknown-config-real-weights":
        args = [a for a in args if a != "--random-weights"] + ["--sam2-config", "sam9_hiera_zz"]
        want = "unknown SAM2 config"
    elif case == "max-frames":
        args += ["--max-frames", "-1"]
        want = "--max-frames"
    else:
        m = _manifest(tmp_path, [{"uri": str(frames), "point": "5,5"}, {"uri": str(frames) + "2", "point": "abc"}])
        args[0] = m
        want = f"manifest {m} row 2, column 'point'"
    start = time.monotonic()
    r = invoke("run", *args)
    assert r.exit_code == 2, r.output
    assert want in r.output and "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith(("Usage:", "Try "))]
    assert len(lines) == 1, r.output  # one line (click adds its usage hint to a usage error)
    assert time.monotonic() - start < 20
    assert not (tmp_path / "out").is_dir() or not any((tmp_path / "out").iterdir())


def test_max_frames_below_one_is_rejected_for_every_entry_point():
    with pytest.raises(ValueError, match="max_frames must be at least 1"):
        JobConfig(inputs=["x"], output="o", max_frames=0)


def test_mixed_frame_sizes_name_the_first_odd_frame(tmp_path):
    from PIL import Image

    folder = write_disc_video(tmp_path / "mixed", 3)
    Image.new("RGB", (64, 48)).save(folder / "00001.jpg")
    task = discover([str(folder)])[0]
    with pytest.raises(VideoReadError, match=r"frame 00001.jpg is 64x48, the first frame is 160x120"):
        list(FrameReader(task))


# --------------------------------------------------------------------------- 8. settings


def test_changed_settings_on_resume_stop_with_one_line(tmp_path, frames):
    out = tmp_path / "out"
    first = JobConfig(inputs=[str(frames)], output=str(out))
    from fastsam2.pipeline import record_settings

    record_settings(first)
    assert (out / "_fastsam2_settings.json").is_file()
    r = invoke("run", frames, "-o", out, "--random-weights", "--point", "5,5", "--keep-ratio", "0.5", "--image-size", "256")
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert len(line.splitlines()) == 1
    assert "keep_ratio 0.3 -> 0.5" in line and "image_size 1024 -> 256" in line and "--allow-mixed-settings" in line
    mtime = (out / "_fastsam2_settings.json").stat().st_mtime_ns
    record_settings(first)  # the same settings again: nothing written
    assert (out / "_fastsam2_settings.json").stat().st_mtime_ns == mtime
    record_settings(first.model_copy(update={"allow_mixed_settings": True,
                                             "pruning": first.pruning.model_copy(update={"keep_ratio": 0.5})}))


def test_sam2_checkpoints_load_through_the_safe_loader(tmp_path):
    from fastsam2.models.checkpoint import UnsafeCheckpoint
    from fastsam2.models.sam2 import build_video_predictor

    ref = build_video_predictor(image_size=256, device="cpu", random_weights=True, seed=1)
    torch.save({"model": ref.state_dict()}, tmp_path / "good.pt")
    loaded = build_video_predictor(checkpoint=str(tmp_path / "good.pt"), image_size=256, device="cpu", seed=2)
    name, param = next(iter(ref.state_dict().items()))
    assert torch.equal(loaded.state_dict()[name], param)  # the file's weights, not seed 2's
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "x": _RunsCode(f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpoint):
        build_video_predictor(checkpoint=str(tmp_path / "evil.pt"), image_size=256, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--sam2-checkpoint", "--detector-weights"])
def test_malicious_model_weights_are_refused_on_the_driver(flag, tmp_path, frames, monkeypatch):
    from fastsam2.models import sam2 as sam2_models

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _RunsCode(f"touch {marker}")}, evil)
    # The CLI's own download check accepts a local file as it is; what is in it is checked before Ray.
    monkeypatch.setattr(sam2_models, "fetch_checkpoint", lambda *a, **k: evil)
    r = invoke("run", frames, "-o", tmp_path / "out", "--point", "5,5", flag, evil)
    assert r.exit_code == 2, r.output
    assert flag in r.output and "run code" in r.output and "Traceback" not in r.output
    assert not marker.exists()
