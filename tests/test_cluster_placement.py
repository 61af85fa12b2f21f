"""GPU placement: the rule on autoscaling clusters, and a clear, fast failure when it cannot be met."""

from __future__ import annotations

import time

import pytest

from fastsam2.config import JobConfig
from fastsam2.placement import (
    ClusterGPUs,
    PlacementError,
    check_placeable,
    gpu_plan,
    read_cluster,
)
from fastsam2.stage_specs import STAGE_SPECS

STAGES = ["propose", "caption", "track", "write"]
GPU_NODE = {"CPU": 8.0, "GPU": 1.0, "memory": 3e10}
CPU_HEAD = {"CPU": 0.0, "memory": 1.6e10}


def _cfg(device="auto", **kw) -> JobConfig:
    return JobConfig(inputs=["x"], output="o", model={"device": device}, **kw)


def test_cuda_requests_gpus_before_any_gpu_node_is_up():
    # A launcher / KubeRay cluster at start: a CPU head, GPU workers at zero, nothing published.
    empty = ClusterGPUs(now=0, max_gpus=None, node_shapes=(CPU_HEAD,))
    assert gpu_plan(_cfg("cuda"), STAGES, empty) == {s: STAGE_SPECS[s].gpus for s in STAGES}
    assert set(gpu_plan(_cfg("auto"), STAGES, empty).values()) == {0.0}  # auto cannot know: CPU
    assert set(gpu_plan(_cfg("cpu"), STAGES, ClusterGPUs(now=8)).values()) == {0.0}


def test_auto_counts_the_gpus_the_autoscaler_can_add():
    scalable = ClusterGPUs(now=0, max_gpus=8, node_shapes=(CPU_HEAD, GPU_NODE))
    assert gpu_plan(_cfg("auto"), STAGES, scalable) == {s: STAGE_SPECS[s].gpus for s in STAGES}
    one = gpu_plan(_cfg("auto"), STAGES, ClusterGPUs(now=0, max_gpus=1, node_shapes=(GPU_NODE,)))
    assert 0 < one["track"] < 1 and sum(one.values()) <= 1.0  # all stages share the one GPU there will be
    check_placeable(_cfg("auto"), one, ClusterGPUs(now=0, max_gpus=1, node_shapes=(GPU_NODE,)))


def test_a_request_no_node_type_can_hold_fails_before_the_run():
    cfg = _cfg("cuda", resources={"track": {"num_gpus": 2, "num_cpus": 2}})
    scalable = ClusterGPUs(now=0, max_gpus=8, node_shapes=(CPU_HEAD, GPU_NODE))
    plan = gpu_plan(cfg, ["track", "write"], scalable)
    with pytest.raises(PlacementError, match=r"stage 'track' asks \{'CPU': 2.0, 'GPU': 2.0\}.*no node"):
        check_placeable(cfg, plan, scalable)
    # Without published node types the check cannot decide: the watchdog does, at run time.
    check_placeable(cfg, plan, ClusterGPUs(now=0, max_gpus=None, node_shapes=(CPU_HEAD,)))


def test_read_cluster_sees_the_autoscalers_published_node_types(ray_local):
    """The same GCS record Ray Data reads (autoscaler v2 / KubeRay publish it)."""
    import ray._raylet
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    key, ns = ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    config = autoscaler_pb2.ClusterConfig()
    group = config.node_group_configs.add(name="gpu", min_count=0, max_count=4)
    group.resources.update({"CPU": 8, "GPU": 1})
    _internal_kv_put(key, config.SerializeToString(), overwrite=True, namespace=ns)
    try:
        cluster = read_cluster()
        assert cluster.now == 0 and cluster.max_gpus == 4
        assert {"CPU": 8.0, "GPU": 1.0} in [{k: float(v) for k, v in s.items() if k in ("CPU", "GPU")}
                                           for s in cluster.node_shapes]
        assert gpu_plan(_cfg("auto"), ["track"], cluster) == {"track": 1.0}
    finally:
        _internal_kv_del(key, namespace=ns)
    assert read_cluster().max_gpus is None


def test_a_gpu_job_on_a_cluster_that_never_gets_gpus_fails_fast_and_says_why(ray_local, tmp_path):
    from fastsam2.pipeline import run_pipeline
    from fastsam2.synthetic import make_video, write_mp4

    video = write_mp4(make_video("p", num_frames=2, height=32, width=48, seed=0), tmp_path / "p.mp4")
    cfg = JobConfig(inputs=[str(video)], output=str(tmp_path / "out"), placement_timeout_s=3,
                    model={"device": "cuda", "random_weights": True, "image_size": 64},
                    prompts={"mode": "user", "point": [10, 10]})
    t0 = time.monotonic()
    with pytest.raises(PlacementError, match=r"stage 'track' needs \{'CPU': 1.0, 'GPU': 1.0\}.*no node offers it"
                                             r".*no autoscaler is adding nodes"):
        run_pipeline(cfg, progress=False)
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out" / "videos").exists()
    from ray.data import DataContext

    assert DataContext.get_current().execution_no_progress_timeout_s == cfg.no_progress_timeout_s == 6 * 3600


def _ops(ds):
    op, out = ds._logical_plan.dag, []
    while op is not None:
        out.append(op)
        op = op.input_dependencies[0] if op.input_dependencies else None
    return out[::-1]


def test_the_plan_gives_each_actor_one_batch_in_flight_and_its_pinned_resources(ray_local):
    from fastsam2.config import VideoTask
    from fastsam2.pipeline import build_dataset, plan_stages

    cfg = _cfg("cuda", resources={"track": {"num_cpus": 2, "resources": {"tracker": 1}}})
    tasks = [VideoTask(video_id="a", uri="x", prompt_source="user")]
    plan = plan_stages(cfg, tasks, ClusterGPUs(now=0, max_gpus=None, node_shapes=(CPU_HEAD,)))
    assert plan.names == ["track", "write"] and plan.gpus == {"track": 1.0, "write": 0.0}
    ds = build_dataset(cfg, tasks, plan)
    track, write = [op for op in _ops(ds) if type(op).__name__ == "MapBatches"]
    assert track.compute.max_tasks_in_flight_per_actor == 1 == write.compute.max_tasks_in_flight_per_actor
    assert track.ray_remote_args == {"num_cpus": 2, "num_gpus": 1.0, "resources": {"tracker": 1.0}}
    assert write.ray_remote_args["num_gpus"] == 0.0


def test_vllm_captions_are_served_with_their_own_gpus_unless_weights_are_random():
    from fastsam2.config import VideoTask
    from fastsam2.pipeline import plan_stages

    tasks = [VideoTask(video_id="a", uri="x", prompt_source="auto")]
    gpu_cluster = ClusterGPUs(now=4, max_gpus=None, node_shapes=(GPU_NODE,) * 4)
    served = plan_stages(_cfg("cuda", prompts={"caption_backend": "vllm"}), tasks, gpu_cluster)
    assert served.names == ["propose", "caption", "track", "write"] and served.served_caption
    assert "caption" not in served.gpus and served.gpus["track"] == 1.0
    actor = plan_stages(_cfg("cuda", prompts={"caption_backend": "vllm", "caption_serving": "actor"}), tasks, gpu_cluster)
    assert not actor.served_caption and actor.gpus["caption"] == 1.0
    rnd = JobConfig(inputs=["x"], output="o", model={"device": "cpu", "random_weights": True},
                    prompts={"caption_backend": "vllm"})
    assert not plan_stages(rnd, tasks, ClusterGPUs()).served_caption  # the tiny model runs in-actor
