"""The CLI's contract on bad input: one line that names the cause, exit code non-zero."""

from __future__ import annotations

import pytest

from fastsam2.cli.options import build_config
from helpers import invoke


def test_missing_output_and_inputs_are_usage_errors(tmp_path):
    r = invoke("run", str(tmp_path))
    assert r.exit_code == 2 and "--output is required" in r.output
    r = invoke("run", "--output", str(tmp_path / "o"))
    assert r.exit_code == 2 and "at least one INPUT" in r.output


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--point", "1,2,3", "--point takes 2"),
        ("--box", "a,b,c,d", "--box takes 4"),
        ("--keep-ratio", "1.5", "keep_ratio"),
        ("--image-size", "100", "multiple of 16"),
        ("--storage-options", "{nope", "not valid JSON"),
    ],
)
def test_bad_option_values_name_the_option(tmp_path, flag, value, message):
    r = invoke("run", str(tmp_path), "-o", str(tmp_path / "o"), "--random-weights", flag, value)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_no_checkpoint_and_no_network_names_both_ways_out(tmp_path, monkeypatch):
    # An unroutable URL stands in for "no network": the download must fail fast and clearly.
    from fastsam2.models import sam2 as sam2_models

    monkeypatch.setitem(sam2_models.CHECKPOINT_URLS, "sam2.1_hiera_t", "http://127.0.0.1:9/sam2.1_hiera_tiny.pt")
    (tmp_path / "in").mkdir()
    r = invoke("run", str(tmp_path / "in"), "-o", str(tmp_path / "o"))
    assert r.exit_code == 1
    assert "--sam2-checkpoint" in r.output and "--random-weights" in r.output
    assert not list(tmp_path.glob("o/**/*.parquet"))


def test_missing_checkpoint_file_is_named(tmp_path):
    r = invoke("run", str(tmp_path), "-o", str(tmp_path / "o"), "--sam2-checkpoint", str(tmp_path / "nope.pt"))
    assert r.exit_code == 1 and "checkpoint file not found" in r.output


def test_input_that_names_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    r = invoke("run", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--random-weights")
    assert r.exit_code == 2 and "no videos or frames found" in r.output  # could not start


def test_yaml_config_and_flags_merge(tmp_path):
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text("inputs: [a.mp4]\noutput: s3://b/out\nmodel: {image_size: 512}\npruning: {keep_ratio: 0.5}\n")
    cfg = build_config((), config_file=str(cfg_file), keep_ratio=0.3, point="3,4")
    assert cfg.inputs == ["a.mp4"] and cfg.output == "s3://b/out"
    assert cfg.model.image_size == 512 and cfg.pruning.keep_ratio == 0.3
    assert cfg.prompts.point == [3.0, 4.0] and cfg.prompts.mode == "user"
    again = type(cfg).model_validate_json(cfg.model_dump_json())
    assert again == cfg


def test_help_lists_the_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("run", "demo"):
        assert cmd in r.output


def test_per_stage_resources_from_flags(tmp_path):
    cfg = build_config(("a.mp4",), output="o", resource_overrides=("propose.num_gpus=0.25", "track.max_actors=4"),
                       track_gpus=0.5)
    assert cfg.resource("propose").num_gpus == 0.25
    assert cfg.resource("track").max_actors == 4 and cfg.resource("track").num_gpus == 0.5
    assert cfg.resource("caption").num_cpus == 1  # untouched stages keep their defaults
    r = invoke("run", "a.mp4", "-o", "o", "--resource", "track.gpus=1")
    assert r.exit_code == 2 and "STAGE.FIELD=VALUE" in r.output
    r = invoke("run", "a.mp4", "-o", "o", "--resource", "track.num_gpus=1.5")
    assert r.exit_code == 2 and "whole number" in r.output
    r = invoke("run", "a.mp4", "-o", "o", "--resource", "track.min_actors=3")
    assert r.exit_code == 2 and "min_actors <= max_actors" in r.output


def test_unknown_stage_in_resources_is_rejected():
    r = invoke("run", "a.mp4", "-o", "o", "--resource", "trak.max_actors=8")
    assert r.exit_code == 2 and "unknown stage" in r.output and "track" in r.output
