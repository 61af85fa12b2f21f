"""``run --dry-run``: videos, done ones, prompts, stages and resources; Ray is never started."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fastsam2.cli import main
from fastsam2.output import write_video
from fastsam2.schema import table_from_rows
from fastsam2.synthetic import make_video, write_frames


def test_dry_run_lists_the_plan_without_ray(tmp_path, monkeypatch):
    import ray

    was_up = ray.is_initialized()

    def no_ray(*a, **k):
        raise AssertionError("dry run started Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    data = tmp_path / "data"
    for seed, name in enumerate(("alpha", "beta", "gamma")):
        write_frames(make_video(name, num_frames=2, height=32, width=40, seed=seed), data)
    out = tmp_path / "out"
    done = dict(video_id="beta", uri=str(data / "JPEGImages" / "480p" / "beta"), status="ok", run_id="earlier")
    write_video(str(out), "beta", {"masks": table_from_rows("masks", []), "frames": table_from_rows("frames", []),
                                   "videos": table_from_rows("videos", [done])})
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    args = ["run", str(data), "-o", str(out), "--point", "10,12", "--text", "a disc", "--random-weights",
            "--track-actors", "3", "--resource", "write.num_cpus=0.5", "--dry-run"]
    r = CliRunner().invoke(main, args, terminal_width=250)
    assert r.exit_code == 0, r.output
    assert "3 video(s) found, 1 already done" in r.output and "2 to label" in r.output
    lines = {ln.split("│")[1].strip(): ln for ln in r.output.splitlines() if ln.count("│") > 3}
    assert "done (skipped)" in lines["beta"] and "to do" in lines["alpha"] and "to do" in lines["gamma"]
    assert "obj 1: point 10,12" in lines["alpha"] and "a disc" in lines["alpha"]
    # A user prompt everywhere: no propose/caption stages; the track pool as asked.
    assert "track" in lines and "write" in lines and "propose" not in lines and "caption" not in lines
    assert "1-3" in lines["track"] and "0.5" in lines["write"]
    assert "RANDOM WEIGHTS" in r.output
    if not was_up:
        assert ray.is_initialized() is False
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written


def test_dry_run_shows_auto_stages_and_weights_source(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    data = tmp_path / "data"
    write_frames(make_video("solo", num_frames=2, height=32, width=40), data)
    r = CliRunner().invoke(main, ["run", str(data), "-o", str(tmp_path / "o"), "--dry-run"], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert "propose" in r.output and "caption" in r.output and "auto (RPN box + click)" in r.output
    assert "not cached, would be downloaded (facebook/sam2.1-hiera-tiny)" in r.output


@pytest.mark.parametrize("args, message", [((), "at least one INPUT"), (("x.mp4",), "--output is required")])
def test_dry_run_still_validates(args, message):
    r = CliRunner().invoke(main, ["run", *args, "--dry-run"])
    assert r.exit_code == 2 and message in r.output
