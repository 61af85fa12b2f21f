"""Where the stages' actors go: per-actor GPUs, and a clear failure when they cannot be placed.

The rule (also in cluster/README.md):

- ``--device cpu``: every stage gets the GPUs its ``resources`` entry names (0 by default).
- ``--device cuda``: stages without an explicit ``num_gpus`` request the GPUs their spec
  declares (:mod:`fastsam2.stage_specs`: one GPU per SAM2 actor, a quarter per RPN actor,
  a whole one per in-actor LLaVA, none for a remote or absent captioner), even
  when the cluster has no GPU node yet: on an autoscaling cluster (the launcher and KubeRay
  files in ``cluster/`` start GPU workers at zero) a pending GPU request is what makes the
  autoscaler add a GPU node.
- ``--device auto``: as ``cuda`` when the cluster has GPUs now or its autoscaler says it
  can add some (Ray's published cluster config: KubeRay, autoscaler v2); otherwise as
  ``cpu``. On a launcher (autoscaler v1) cluster that starts with no GPU node, say
  ``--device cuda``.

Defaults are scaled down when one actor of every stage would not fit the GPUs the cluster
has or can grow to (e.g. all stages on one GPU share it): a pool whose first actor
cannot be placed waits forever.

A job that can never be placed fails fast and says why: before the run when a request is
larger than any node (now, or any node type the autoscaler may add) offers, and, while
the run waits, from :class:`PlacementWatchdog` when nothing has come out, a GPU stage has
no node that fits, and the autoscaler is launching nothing (after ``placement_timeout_s``,
a minute by default).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

from fastsam2.config import JobConfig
from fastsam2.stage_specs import STAGE_SPECS

log = logging.getLogger(__name__)


class PlacementError(RuntimeError):
    """The job's actors cannot be placed on this cluster (the message says which and why)."""


@dataclass(frozen=True)
class ClusterGPUs:
    """What the cluster offers, now and after autoscaling.

    ``max_gpus`` is what the autoscaler says the cluster may grow to (None: not published);
    ``node_shapes`` are the resources of each node now plus each node type it may add.
    """

    now: float = 0.0
    max_gpus: float | None = None
    node_shapes: tuple[dict, ...] = field(default_factory=tuple)

    @property
    def capacity(self) -> float:
        return max(self.now, self.max_gpus or 0.0)


def read_cluster() -> ClusterGPUs:
    """The connected Ray cluster's GPUs now, its autoscaler's maximum, and its node shapes."""
    import ray
    from ray._private import state

    now = float(ray.cluster_resources().get("GPU", 0.0))
    shapes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    max_gpus = None
    try:
        config = state.state.get_cluster_config()  # published by KubeRay / autoscaler v2
    except Exception:  # noqa: BLE001 - an older or partial GCS: treat as not published
        config = None
    if config is not None:
        for group in config.node_group_configs:
            if group.max_count != 0:
                shapes.append(dict(group.resources))
        maxima = state.state.get_max_resources_from_cluster_config() or {}
        max_gpus = float(maxima.get("GPU", 0))
    return ClusterGPUs(now=now, max_gpus=max_gpus, node_shapes=tuple(shapes))


def _as_cluster(cluster: ClusterGPUs | float) -> ClusterGPUs:
    return cluster if isinstance(cluster, ClusterGPUs) else ClusterGPUs(now=float(cluster))


def gpu_plan(cfg: JobConfig, stages: list[str], cluster_gpus: ClusterGPUs | float) -> dict[str, float]:
    """Per-actor GPUs of each stage (see the module docstring for the rule).

    ``cluster_gpus``: a :class:`ClusterGPUs`, or just the number of GPUs now.
    """
    cluster = _as_cluster(cluster_gpus)
    device = cfg.model.device
    use_gpus = device == "cuda" or (device not in ("cpu",) and cluster.capacity >= 1)
    plan, defaulted = {}, []
    for stage in stages:
        res = cfg.resource(stage)
        default = STAGE_SPECS[stage].default_gpus(cfg)
        if res.num_gpus or not use_gpus or not default:
            plan[stage] = res.num_gpus
        else:
            plan[stage] = default
            defaulted.append(stage)
    capacity = cluster.capacity
    if defaulted and capacity >= 1 and sum(plan.values()) > capacity:
        scale = max(0.0, capacity - sum(plan[s] for s in stages if s not in defaulted))
        scale /= sum(plan[s] for s in defaulted) or 1.0
        for stage in defaulted:
            plan[stage] = round(plan[stage] * min(1.0, scale), 3)
    return plan


def actor_request(cfg: JobConfig, stage: str, gpus: float) -> dict[str, float]:
    """The resources one actor of ``stage`` asks Ray for."""
    res = cfg.resource(stage)
    req = {"CPU": float(res.num_cpus), **{k: float(v) for k, v in res.resources.items()}}
    if gpus:
        req["GPU"] = float(gpus)
    return {k: v for k, v in req.items() if v}


def fits(request: dict[str, float], shape: dict) -> bool:
    return all(float(shape.get(k, 0.0)) >= v for k, v in request.items())


def check_placeable(cfg: JobConfig, plan: dict[str, float], cluster: ClusterGPUs) -> None:
    """Fail now when a stage's actor is larger than every node there is or can be.

    Only decidable when the autoscaler has published its node types (``max_gpus`` known)
    or no autoscaling is involved; otherwise :class:`PlacementWatchdog` decides at run time.
    """
    if cluster.max_gpus is None:
        return
    for stage, gpus in plan.items():
        req = actor_request(cfg, stage, gpus)
        if not any(fits(req, s) for s in cluster.node_shapes):
            raise PlacementError(
                f"stage {stage!r} asks {req} per actor, but no node of this cluster offers that, now or "
                f"after autoscaling (node shapes: {_shapes(cluster.node_shapes)}). Lower "
                f"resources.{stage}.num_gpus / num_cpus, add a node type that fits, or use --device cpu."
            )


def _shapes(shapes) -> str:
    keep = ("CPU", "GPU")
    return "; ".join(str({k: s.get(k, 0) for k in keep}) for s in shapes) or "none"


def autoscaler_pending() -> int | None:
    """Nodes the autoscaler is launching or waiting for (None: no autoscaler status found)."""
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)  # autoscaler v1
        if raw:
            report = json.loads(raw).get("autoscaler_report") or {}
            pending = report.get("pending_nodes") or []
            launches = report.get("pending_launches") or {}
            return len(pending) + sum(int(v) for v in launches.values())
    except Exception:  # noqa: BLE001
        pass
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)  # autoscaler v2
        return len(status.pending_launches) + len(status.pending_nodes)
    except Exception:  # noqa: BLE001
        return None


class PlacementWatchdog:
    """While a run waits for its first result, fail it if a GPU stage can never start.

    Every ``poll_s`` it checks whether each GPU stage's actor fits some live node; when
    one does not, and the autoscaler reports nothing pending, for ``timeout_s`` in a row,
    it records why and interrupts the driver's main thread (``run_pipeline`` turns that
    into :class:`PlacementError`). The first result stops it: the stages are placed.
    """

    def __init__(self, cfg: JobConfig, plan: dict[str, float], timeout_s: float, poll_s: float = 2.0):
        self.cfg, self.plan, self.timeout_s, self.poll_s = cfg, plan, timeout_s, poll_s
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastsam2-placement", daemon=True)

    def start(self) -> "PlacementWatchdog":
        if self.timeout_s > 0 and any(self.plan.values()):
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def unplaceable(self) -> str | None:
        """Why some GPU stage cannot start now (None when every one fits a live node)."""
        import ray

        live = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
        for stage, gpus in self.plan.items():
            if not gpus:
                continue
            req = actor_request(self.cfg, stage, gpus)
            if not any(fits(req, s) for s in live):
                return (f"stage {stage!r} needs {req} per actor and no node offers it "
                        f"(nodes now: {_shapes(live)})")
        return None

    def _run(self) -> None:
        import _thread

        since = None
        while not self._stop.wait(self.poll_s):
            try:
                why = self.unplaceable()
                pending = autoscaler_pending() if why else 0
            except Exception:  # noqa: BLE001 - the watchdog never breaks a run
                continue
            if not why or pending:
                if why and pending:
                    log.info("placement: %s; the autoscaler is adding %d node(s), waiting", why, pending)
                since = None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since >= self.timeout_s and not self._stop.is_set():
                self.reason = (f"{why}, and no autoscaler is adding nodes (waited {self.timeout_s:.0f}s). "
                               "On a cluster without GPUs use --device cpu; on an autoscaling cluster check "
                               "its GPU worker type (max_workers, instance quota, image)")
                log.error("placement: %s", self.reason)
                _thread.interrupt_main()
                return
