"""A small load test: many short videos through a 2-CPU local Ray instance, every row exactly once.

The same code as benchmarks/pipeline_overhead.py (which runs 50 videos and reports the
pipeline overhead ratio); here 10 videos x 2 frames, and no timing assertion: CI machines
are shared, timings are for the benchmark.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("pipeline_overhead", REPO / "benchmarks" / "pipeline_overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ten_videos_on_two_cpus_every_row_exactly_once(ray_local, tmp_path):
    assert ray_local.cluster_resources()["CPU"] == 2
    result = _benchmark().run_benchmark(n_videos=10, frames=2, workdir=str(tmp_path))
    print(json.dumps(result))
    check = result["check"]
    assert check["ok"], check
    assert check["videos"] == 10 and check["mask_rows"] == 20 and check["frame_rows"] == 20
    assert check["duplicates"] == 0 and check["error_rows"] == 0
    assert result["summary"] == {"ok": 10, "failed": 0, "skipped": 0}
    assert result["wall_s"] > 0 and result["model_s"] > 0  # measured, not asserted on

