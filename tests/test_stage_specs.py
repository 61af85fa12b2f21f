"""Stages declare themselves: one list that the Ray classes, the config, the pipeline and placement read."""

from __future__ import annotations

import pytest

from fastsam2.config import ConfigError, JobConfig, VideoTask, load_config
from fastsam2.pipeline import plan_stages
from fastsam2.placement import ClusterGPUs, gpu_plan
from fastsam2.stage_specs import STAGE_SPECS, STAGES, needed_stages
from fastsam2.stages import STAGE_CLASSES


def _cfg(**kw) -> JobConfig:
    return JobConfig(inputs=["x"], output="o", **kw)


def _task(source: str, text: str | None = None) -> VideoTask:
    return VideoTask(video_id="v", uri="v.mp4", prompt_source=source, text=text)


def test_every_declared_stage_has_its_ray_class_and_back():
    assert [s.name for s in STAGES] == ["propose", "caption", "track", "write"]  # pipeline order
    assert list(STAGE_CLASSES) == [s.name for s in STAGES]
    for name, cls in STAGE_CLASSES.items():
        assert cls.spec is STAGE_SPECS[name]


def test_the_config_fills_and_checks_stages_from_the_declarations():
    cfg = _cfg(resources={"write": {"max_actors": 2}})
    assert set(cfg.resources) == set(STAGE_SPECS)  # the stages left out get their declared defaults ...
    assert cfg.resource("write").max_actors == 2
    assert cfg.resource("write").num_cpus == STAGE_SPECS["write"].defaults.num_cpus == 0.25  # ... so do the fields
    assert cfg.resource("track") == STAGE_SPECS["track"].defaults
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['trak'\]; stages are \['caption', 'propose'"):
        load_config({"inputs": ["x"], "output": "o", "resources": {"trak": {"max_actors": 8}}})


def test_partial_stage_resources_load_alike_from_yaml_flags_and_json(tmp_path):
    from fastsam2.cli.options import build_config

    path = tmp_path / "job.yaml"
    path.write_text("inputs: [a.mp4]\noutput: o\nresources: {write: {max_actors: 2}}\n")
    from_file = load_config(path)
    from_flags = build_config((), config_file=str(path))
    from_json = load_config(from_file.model_dump_json())
    for cfg in (from_flags, from_json):
        assert cfg.model_copy(update={"run_id": from_file.run_id}) == from_file
    assert from_file.resource("write").num_cpus == 0.25


def test_which_stages_a_job_needs():
    cfg = _cfg()
    assert needed_stages(cfg, [_task("user")]) == ["track", "write"]
    assert needed_stages(cfg, [_task("auto")]) == ["propose", "caption", "track", "write"]
    assert needed_stages(cfg, [_task("auto", text="a dog")]) == ["propose", "track", "write"]  # a phrase: no caption
    assert needed_stages(_cfg(prompts={"caption_backend": "none"}), [_task("auto")]) == ["propose", "track", "write"]
    plan = plan_stages(cfg, [_task("user"), _task("auto")], ClusterGPUs(now=0))
    assert plan.names == ["propose", "caption", "track", "write"]


def test_gpus_on_a_gpu_cluster_come_from_the_declarations():
    names = [s.name for s in STAGES]
    assert gpu_plan(_cfg(), names, 8) == {s.name: s.gpus for s in STAGES}
    remote = gpu_plan(_cfg(prompts={"caption_backend": "openai"}), names, 8)
    assert remote["caption"] == 0.0 and remote["track"] == STAGE_SPECS["track"].gpus  # an endpoint needs no GPU


def test_vllm_takes_whole_gpus_in_run_too():
    ok = _cfg(prompts={"caption_backend": "vllm"}, resources={"caption": {"num_gpus": 2}})
    assert ok.resource("caption").num_gpus == 2
    assert _cfg(resources={"caption": {"num_gpus": 0.5}}).resource("caption").num_gpus == 0.5  # transformers: fine
    with pytest.raises(ConfigError, match="vLLM engines take whole GPUs"):
        load_config({"inputs": ["x"], "output": "o", "prompts": {"caption_backend": "vllm"},
                     "resources": {"caption": {"num_gpus": 0.5}}})
    # with random weights every backend is the tiny in-process LLaVA: no vLLM engine, no rule
    tiny = load_config({"inputs": ["x"], "output": "o", "prompts": {"caption_backend": "vllm"},
                        "model": {"random_weights": True}, "resources": {"caption": {"num_gpus": 0.5}}})
    assert tiny.resource("caption").num_gpus == 0.5
