"""Hostile manifest ids end to end through Ray (local Ray, 2 CPUs; local disk and loopback S3).

Random-weight SAM2.1 hiera-t at 256 px, 2 frames per video, user clicks: the masks are
meaningless, the plumbing is what is checked. Every video is labelled exactly once under a
safe id, every row reads back through eval's and report's readers, nothing lands outside
the output root, a failed video makes ``run`` exit 3 and a clean re-run exits 0, and a run
with nothing left to do writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import s3fs
from click.testing import CliRunner
from helpers import write_disc_video, write_manifest

from fastsam2.cli import main
from fastsam2.eval.io import read_run_table
from fastsam2.pipeline import EXIT_OK, EXIT_VIDEOS_FAILED
from fastsam2.report.queries import build_report
from fastsam2.video_ids import is_safe_id

pytestmark = pytest.mark.slow

HOSTILE_IDS = ["../../x", "..\\x", "/abs/p", "a/b", "b", ".hidden", "L" * 300, "dup", "dup", "dup-1",
               "Case", "case", "vidéo"]
ARGS = ["--random-weights", "--image-size", "256", "--device", "cpu", "--max-frames", "2",
        "--point", "48,60", "--semantic", "none"]


def _write_manifest(path: Path, uris: list[str]) -> None:
    write_manifest(path, [{"uri": uri, "video_id": vid, "point": "48,60"} for uri, vid in zip(uris, HOSTILE_IDS)],
                   ["uri", "video_id", "point"])


def _files(root: Path, skip: Path | None = None) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and (skip is None or skip not in p.parents)}


def _check_output(out: str, uris: list[str], extra_done: int = 0) -> None:
    """Every video once, under a safe unique id, readable by eval's and report's readers."""
    videos = read_run_table(out, "videos").to_pylist()
    assert sorted(v["uri"] for v in videos) == sorted(uris) if not extra_done else len(videos) == len(uris) + extra_done
    ids = [v["video_id"] for v in videos]
    assert len({i.lower() for i in ids}) == len(ids) and all(is_safe_id(i) for i in ids)
    by_uri = {v["uri"]: v for v in videos}
    for uri, given in zip(uris, HOSTILE_IDS):
        row = by_uri[uri]
        assert row["source_id"] == (None if row["video_id"] == given else given)  # the user's name is kept
    masks = read_run_table(out, "masks").to_pylist()
    keys = [(m["video_id"], m["obj_id"], m["frame_idx"]) for m in masks]
    assert len(keys) == len(set(keys)) == 2 * len(videos)  # one object, 2 frames, each exactly once
    assert {m["video_id"] for m in masks} == set(ids)
    assert read_run_table(out, "frames").num_rows == 2 * len(videos)
    report = build_report([out])
    assert len(report.video_rows) == len(videos) and report.errors == []


def test_hostile_manifest_ids_local(ray_local, tmp_path):
    data = tmp_path / "data"
    uris = [str(write_disc_video(data / f"v{i}", 2)) for i in range(len(HOSTILE_IDS))]
    uris[0] = "file://" + uris[0]  # a file:// URI works like a path
    mixed = write_disc_video(data / "mixed", 2)
    from PIL import Image

    Image.new("RGB", (64, 48)).save(mixed / "00001.jpg")  # one frame of another size
    manifest = tmp_path / "manifest.csv"
    _write_manifest(manifest, uris)
    out = tmp_path / "p1" / "p2" / "out"  # ../../x would land in tmp_path
    before = _files(tmp_path)

    first = CliRunner().invoke(main, ["run", str(manifest), str(mixed), "-o", str(out), *ARGS])
    assert first.exit_code == EXIT_VIDEOS_FAILED, first.output
    assert f"{len(HOSTILE_IDS)} video(s) labelled, 1 failed" in first.output
    after = _files(tmp_path)
    assert {p: t for p, t in after.items() if not p.startswith(str(out) + os.sep)} == before  # nothing outside
    assert not list(tmp_path.glob("*.parquet")) and not list(out.parent.glob("*.parquet"))
    plain = [u.removeprefix("file://") for u in uris]
    videos = read_run_table(str(out), "videos")
    assert sorted(videos.column("uri").to_pylist()) == sorted(plain)
    errors = read_run_table(str(out), "errors").to_pylist()
    assert [e["uri"] for e in errors] == [str(mixed)] and "frame 00001.jpg is 64x48" in errors[0]["message"]
    assert read_run_table(str(out), "masks").to_pylist() and not any(
        m["video_id"] == errors[0]["video_id"] for m in read_run_table(str(out), "masks").to_pylist())

    write_disc_video(mixed, 2)  # fix the odd frame: a clean re-run labels it and exits 0
    second = CliRunner().invoke(main, ["run", str(manifest), str(mixed), "-o", str(out), *ARGS])
    assert second.exit_code == EXIT_OK, second.output
    assert "1 video(s) labelled, 0 failed" in second.output and f"{len(HOSTILE_IDS)} already done" in second.output
    assert read_run_table(str(out), "errors") is None
    _check_output(str(out), plain, extra_done=1)

    snapshot = _files(tmp_path)
    third = CliRunner().invoke(main, ["run", str(manifest), str(mixed), "-o", str(out), *ARGS])
    assert third.exit_code == EXIT_OK and "0 video(s) labelled" in third.output, third.output
    assert _files(tmp_path) == snapshot  # nothing written, nothing touched


def test_hostile_manifest_ids_s3(ray_local, s3_env, tmp_path):
    fs = s3fs.S3FileSystem()
    uris = []
    for i in range(len(HOSTILE_IDS)):
        local = write_disc_video(tmp_path / f"v{i}", 2)
        fs.put(str(local), f"{s3_env}/in/v{i}", recursive=True)
        uris.append(f"s3://{s3_env}/in/v{i}")
    manifest = tmp_path / "manifest.csv"
    _write_manifest(manifest, uris)
    fs.put(str(manifest), f"{s3_env}/in/manifest.csv")
    out = f"s3://{s3_env}/p1/p2/out"
    before = set(fs.find(s3_env))

    args = ["run", f"s3://{s3_env}/in/manifest.csv", "-o", out, *ARGS]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == EXIT_OK, first.output
    assert f"{len(HOSTILE_IDS)} video(s) labelled, 0 failed" in first.output
    new = set(fs.find(s3_env)) - before
    assert new and all(k.startswith(f"{s3_env}/p1/p2/out/") for k in new), sorted(new)  # nothing outside
    _check_output(out, uris)

    fs.invalidate_cache()
    stamps = {k: fs.info(k)["LastModified"] for k in fs.find(s3_env)}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == EXIT_OK and "0 video(s) labelled" in again.output, again.output
    fs.invalidate_cache()
    assert {k: fs.info(k)["LastModified"] for k in fs.find(s3_env)} == stamps
