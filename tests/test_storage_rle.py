"""RLE round trips and atomic, idempotent Parquet writes (local and loopback S3)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from fastsam2 import rle
from fastsam2.output import from_ipc, to_ipc, write_video
from fastsam2.schema import table_from_rows
from fastsam2.storage import done_video_ids, read_table, with_retries, write_parquet_atomic


def test_rle_round_trip_area_and_box():
    mask = np.zeros((30, 40), bool)
    mask[5:12, 7:20] = True
    counts, area, bbox = rle.encode(mask)
    assert isinstance(counts, str) and area == 7 * 13
    assert bbox == [7.0, 5.0, 20.0, 12.0]
    np.testing.assert_array_equal(rle.decode(counts, 30, 40), mask)
    empty_counts, empty_area, empty_box = rle.encode(np.zeros((4, 4), bool))
    assert empty_area == 0 and empty_box == [0.0, 0.0, 0.0, 0.0]
    assert not rle.decode(empty_counts, 4, 4).any()


def _tables(video_id: str, n: int = 3):
    masks = [{"video_id": video_id, "obj_id": 1, "frame_idx": i, "height": 4, "width": 4, "rle": "", "area": 0,
              "bbox": [0, 0, 0, 0], "score": 0.0} for i in range(n)]
    return {
        "masks": table_from_rows("masks", masks),
        "frames": table_from_rows("frames", [{"video_id": video_id, "frame_idx": i} for i in range(n)]),
        "videos": table_from_rows("videos", [{"video_id": video_id, "status": "ok", "num_frames": n}]),
    }


def test_local_writes_are_atomic_and_rerun_safe(tmp_path):
    root = str(tmp_path / "out")
    tables = _tables("v1")
    write_video(root, "v1", {k: from_ipc(to_ipc(t)) for k, t in tables.items()})
    write_video(root, "v1", tables)  # a re-run overwrites, never duplicates
    assert done_video_ids(root) == {"v1"}
    assert read_table(root, "masks").num_rows == 3
    leftovers = [f for _, _, files in os.walk(root) for f in files if f.endswith(".tmp")]
    assert leftovers == []


def test_error_file_is_removed_once_the_video_succeeds(tmp_path):
    root = str(tmp_path / "out")
    err = table_from_rows("errors", [{"video_id": "v1", "uri": "x", "stage": "track", "error_type": "E", "message": "m"}])
    write_video(root, "v1", {"errors": err})
    assert read_table(root, "errors").num_rows == 1 and done_video_ids(root) == set()
    write_video(root, "v1", _tables("v1"))
    assert read_table(root, "errors").num_rows == 0 and done_video_ids(root) == {"v1"}


def test_s3_write_and_read_back(s3_env):
    root = f"s3://{s3_env}/run"
    write_video(root, "v2", _tables("v2", n=5))
    assert done_video_ids(root) == {"v2"}
    t = read_table(root, "masks")
    assert t.num_rows == 5 and t.column("video_id").to_pylist() == ["v2"] * 5


def test_transient_errors_are_retried_then_raised():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert with_retries(flaky, "flaky", base_delay=0.01) == "ok" and len(calls) == 3
    with pytest.raises(OSError):
        with_retries(lambda: (_ for _ in ()).throw(OSError("down")), "always", attempts=2, base_delay=0.01)


def test_written_parquet_has_the_declared_schema(tmp_path):
    path = tmp_path / "x.parquet"
    write_parquet_atomic(_tables("v")["masks"], str(path))
    assert pq.read_schema(path).field("bbox").type.list_size == 4


def test_a_failure_removes_partial_rows_of_an_earlier_crashed_attempt(tmp_path):
    from fastsam2.output import table_uri

    root = str(tmp_path / "out")
    tables = _tables("v3")
    write_parquet_atomic(tables["masks"], table_uri(root, "masks", "v3"))  # crashed before videos/
    err = table_from_rows("errors", [{"video_id": "v3", "uri": "x", "stage": "track", "error_type": "E", "message": "m"}])
    write_video(root, "v3", {"errors": err})
    assert read_table(root, "masks").num_rows == 0 and read_table(root, "errors").num_rows == 1
