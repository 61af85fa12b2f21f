"""cluster/: what can be checked without AWS, Kubernetes or a Docker daemon.

- the launcher YAML against Ray's own cluster-config schema (ray/autoscaler/ray-schema.json)
  and Ray's config preparation, as `ray up` does before it touches AWS;
- the KubeRay manifests against the fields of the KubeRay v1.6.2 CRDs (the field tables of
  KubeRay's generated API reference for that release, ray-project/kuberay
  docs/reference/api.md at commit 0a9eabde561ab59ab4bbe626072c359da9214484), plus the
  Kubernetes core fields their pod templates use, with their types;
- the RayJob's entry point and runtime env against jobs/ (the config it names must load);
- the Dockerfile: same Ray as ours, same Python, and the install step is CI's script.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from fastsam2.job import entry

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"

# --------------------------------------------------------------------------- KubeRay v1.6.2 fields
# type name -> (allowed fields, required fields); nested object types by field name below.
KUBERAY = {
    "RayCluster": ({"apiVersion", "kind", "metadata", "spec"}, {"apiVersion", "kind", "metadata", "spec"}),
    "RayJob": ({"apiVersion", "kind", "metadata", "spec"}, {"apiVersion", "kind", "metadata", "spec"}),
    "RayClusterSpec": ({"upgradeStrategy", "authOptions", "suspend", "managedBy", "autoscalerOptions",
                        "headServiceAnnotations", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                        "headGroupSpec", "rayVersion", "workerGroupSpecs"}, {"headGroupSpec"}),
    "AuthOptions": ({"enableK8sTokenAuth", "secretName", "mode"}, set()),
    "AutoscalerOptions": ({"resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
                           "upscalingMode", "version", "env", "envFrom", "volumeMounts"}, set()),
    "HeadGroupSpec": ({"template", "headService", "enableIngress", "resources", "labels", "rayStartParams",
                       "serviceType"}, {"template"}),
    "WorkerGroupSpec": ({"suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                         "resources", "labels", "rayStartParams", "template", "scaleStrategy", "numOfHosts"},
                        {"groupName", "template"}),
    "RayJobSpec": ({"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
                    "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
                    "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
                    "entrypointNumGpus", "ttlSecondsAfterFinished", "preRunningDeadlineSeconds",
                    "shutdownAfterJobFinishes", "suspend"}, set()),
}
ENUMS = {("AuthOptions", "mode"): {"disabled", "token"},
         ("AutoscalerOptions", "upscalingMode"): {"Default", "Aggressive", "Conservative"},
         ("AutoscalerOptions", "version"): {"v1", "v2"},
         ("RayJobSpec", "submissionMode"): {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}}
INTS = {"replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "numOfHosts", "activeDeadlineSeconds",
        "backoffLimit", "ttlSecondsAfterFinished", "preRunningDeadlineSeconds"}
BOOLS = {"suspend", "enableInTreeAutoscaling", "enableIngress", "shutdownAfterJobFinishes", "enableK8sTokenAuth"}
STRING_MAPS = {"rayStartParams", "resources", "labels", "headServiceAnnotations", "clusterSelector"}
# Kubernetes core (v1) fields the pod templates use.
POD_TEMPLATE = {"metadata", "spec"}
POD_SPEC = {"containers", "initContainers", "volumes", "tolerations", "serviceAccountName", "nodeSelector",
            "affinity", "imagePullSecrets", "securityContext", "priorityClassName", "restartPolicy",
            "terminationGracePeriodSeconds"}
CONTAINER = {"name", "image", "ports", "resources", "env", "envFrom", "volumeMounts", "command", "args",
             "imagePullPolicy", "lifecycle", "securityContext", "readinessProbe", "livenessProbe", "workingDir"}
PORT = {"containerPort", "name", "protocol", "hostPort", "hostIP"}
ENV_VAR = {"name", "value", "valueFrom"}
MOUNT = {"name", "mountPath", "readOnly", "subPath"}
TOLERATION = {"key", "operator", "value", "effect", "tolerationSeconds"}
QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


def _check_fields(obj: dict, allowed: set, required: set, where: str) -> list[str]:
    errs = [f"{where}: unknown field {k!r}" for k in obj if k not in allowed]
    errs += [f"{where}: missing required field {k!r}" for k in required if k not in obj]
    return errs


def check_pod_template(tpl: dict, where: str, gpu: bool) -> list[str]:
    errs = _check_fields(tpl, POD_TEMPLATE, {"spec"}, where)
    spec = tpl.get("spec", {})
    errs += _check_fields(spec, POD_SPEC, {"containers"}, f"{where}.spec")
    for i, c in enumerate(spec.get("containers", [])):
        w = f"{where}.spec.containers[{i}]"
        errs += _check_fields(c, CONTAINER, {"name", "image"}, w)
        for p in c.get("ports", []):
            errs += _check_fields(p, PORT, {"containerPort"}, f"{w}.ports")
            if not isinstance(p.get("containerPort"), int):
                errs.append(f"{w}.ports: containerPort must be an integer")
        for e in c.get("env", []):
            errs += _check_fields(e, ENV_VAR, {"name"}, f"{w}.env")
        for m in c.get("volumeMounts", []):
            errs += _check_fields(m, MOUNT, {"name", "mountPath"}, f"{w}.volumeMounts")
        res = c.get("resources", {})
        errs += _check_fields(res, {"requests", "limits", "claims"}, set(), f"{w}.resources")
        for kind in ("requests", "limits"):
            for name, q in res.get(kind, {}).items():
                if not QUANTITY.match(str(q)):
                    errs.append(f"{w}.resources.{kind}.{name}: {q!r} is not a quantity")
        if gpu and i == 0 and str(res.get("limits", {}).get("nvidia.com/gpu")) != "1":
            errs.append(f"{w}: a GPU worker needs limits nvidia.com/gpu: 1")
    for t in spec.get("tolerations", []):
        errs += _check_fields(t, TOLERATION, set(), f"{where}.spec.tolerations")
    mounted = {m["name"] for c in spec.get("containers", []) for m in c.get("volumeMounts", [])}
    declared = {v["name"] for v in spec.get("volumes", [])}
    errs += [f"{where}: volumeMount {n!r} has no volume" for n in mounted - declared]
    return errs


def check_kuberay(obj: dict, kind: str, where: str = "") -> list[str]:
    """Field names, required fields, enums and scalar types of a KubeRay object (recursively)."""
    allowed, required = KUBERAY[kind]
    where = where or kind
    errs = _check_fields(obj, allowed, required, where)
    for key, value in obj.items():
        w = f"{where}.{key}"
        if (kind, key) in ENUMS and value not in ENUMS[(kind, key)]:
            errs.append(f"{w}: {value!r} not in {sorted(ENUMS[(kind, key)])}")
        if key in INTS and (not isinstance(value, int) or isinstance(value, bool)):
            errs.append(f"{w}: must be an integer")
        if key in BOOLS and not isinstance(value, bool):
            errs.append(f"{w}: must be a boolean")
        if key in STRING_MAPS and kind not in ("RayCluster", "RayJob"):
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                errs.append(f"{w}: must map strings to strings (quote numbers)")
    nested = {"spec": "RayClusterSpec" if kind == "RayCluster" else "RayJobSpec" if kind == "RayJob" else None,
              "rayClusterSpec": "RayClusterSpec", "authOptions": "AuthOptions",
              "autoscalerOptions": "AutoscalerOptions", "headGroupSpec": "HeadGroupSpec"}
    for key, sub in nested.items():
        if sub and isinstance(obj.get(key), dict) and not (key == "spec" and kind not in ("RayCluster", "RayJob")):
            errs += check_kuberay(obj[key], sub, f"{where}.{key}")
    for i, group in enumerate(obj.get("workerGroupSpecs", []) if kind == "RayClusterSpec" else []):
        errs += check_kuberay(group, "WorkerGroupSpec", f"{where}.workerGroupSpecs[{i}]")
        if group.get("minReplicas", 0) > group.get("maxReplicas", 2**31 - 1):
            errs.append(f"{where}.workerGroupSpecs[{i}]: minReplicas > maxReplicas")
        errs += check_pod_template(group.get("template", {}), f"{where}.workerGroupSpecs[{i}].template",
                                   gpu="gpu" in group.get("groupName", ""))
    if kind == "HeadGroupSpec":
        errs += check_pod_template(obj.get("template", {}), f"{where}.template", gpu=False)
    if kind in ("RayCluster", "RayJob"):
        if obj.get("apiVersion") != "ray.io/v1" or obj.get("kind") != kind:
            errs.append(f"{where}: apiVersion/kind must be ray.io/v1 {kind}")
        if not obj.get("metadata", {}).get("name"):
            errs.append(f"{where}: metadata.name is required")
    return errs


def _load(name: str) -> dict:
    docs = list(yaml.safe_load_all((CLUSTER / name).read_text()))
    assert len(docs) == 1
    return docs[0]


def _images(spec: dict) -> set[str]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}


# --------------------------------------------------------------------------- tests


def test_every_cluster_file_is_present_parses_and_is_commented():
    names = sorted(p.name for p in CLUSTER.iterdir())
    for needed in ("Dockerfile", "README.md", "aws-gpu.yaml", "kuberay-raycluster.yaml", "kuberay-rayjob.yaml"):
        assert needed in names
    for path in CLUSTER.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())
        assert sum(line.lstrip().startswith("#") for line in path.read_text().splitlines()) >= 5, path.name
    readme = (CLUSTER / "README.md").read_text()
    for name in names:
        if name != "README.md":
            assert name in readme, f"cluster/README.md does not mention {name}"


def test_launcher_yaml_passes_rays_own_schema_and_preparation():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    raw = _load("aws-gpu.yaml")
    jsonschema.validate(raw, schema)  # unknown or mistyped keys fail here
    prepared = prepare_config(raw)    # what `ray up` does before it talks to AWS
    validate_config(prepared)

    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p")), "head must be a CPU instance"
    assert head["resources"].get("CPU") == 0
    assert workers and all(w["node_config"]["InstanceType"].startswith(("g", "p")) for w in workers)
    assert all(0 <= w["min_workers"] <= w["max_workers"] <= prepared["max_workers"] for w in workers)
    # Every node runs the project image, the same one the KubeRay manifests name.
    assert prepared["docker"]["image"] in _images(_load("kuberay-raycluster.yaml")["spec"])
    assert not raw["setup_commands"], "the image has everything: nothing is installed at boot"
    assert all("RAY_AUTH_MODE=token" in " ".join(raw[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
    assert "~/.ray/auth_token" in raw["file_mounts"]


def test_a_wrong_launcher_key_is_caught():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    bad = _load("aws-gpu.yaml")
    bad["available_node_types"]["worker.gpu"]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_raycluster_manifest_uses_only_kuberay_fields():
    rc = _load("kuberay-raycluster.yaml")
    assert check_kuberay(rc, "RayCluster") == []
    spec = rc["spec"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == importlib.metadata.version("ray")
    assert len(_images(spec)) == 1
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_rayjob_manifest_uses_only_kuberay_fields_and_runs_our_entry_point():
    rj = _load("kuberay-rayjob.yaml")
    assert check_kuberay(rj, "RayJob") == []
    spec = rj["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == importlib.metadata.version("ray")
    assert spec["rayClusterSpec"]["authOptions"]["mode"] == "token"
    assert _images(spec["rayClusterSpec"]) == _images(_load("kuberay-raycluster.yaml")["spec"])

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(runtime_env) <= {"env_vars", "pip", "py_modules", "working_dir", "uv", "conda", "config", "image_uri"}
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())

    # The entry point names files the image has (COPY . /app) and loads as a valid job.
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "fastsam2.job"]  # the installed package's entry point
    local = [a.replace("/app/", str(REPO) + "/", 1) if a.startswith("/app/") else a for a in argv[3:]]
    cfg = entry.job_config(entry.parse_args(local))
    assert cfg.inputs[0].startswith("s3://") and cfg.output.startswith("s3://")
    assert cfg.resource("track").num_gpus == 1


def test_the_manifest_checker_catches_mistakes():
    rc = _load("kuberay-raycluster.yaml")
    rc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4                     # misspelt field
    rc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0            # not a string
    rc["spec"]["authOptions"]["mode"] = "password"                           # not in the enum
    rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2"
    errs = "\n".join(check_kuberay(rc, "RayCluster"))
    assert "unknown field 'maxReplica'" in errs and "rayStartParams: must map strings" in errs
    assert "'password' not in" in errs and "nvidia.com/gpu: 1" in errs


def test_dockerfile_installs_the_lock_first_then_the_project_non_editable_as_non_root():
    text = (CLUSTER / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    base = next(ln for ln in lines if ln.startswith("ARG RAY_IMAGE="))
    ray_version = importlib.metadata.version("ray")
    assert f":{ray_version}-" in base, "the image's Ray must match the client's"
    py = re.search(r"-py3(\d+)", base).group(1)
    requires = re.search(r'requires-python\s*=\s*">=3\.(\d+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert int(py) >= int(requires)
    lock_copy = next(i for i, ln in enumerate(lines) if ln.startswith("COPY") and "cluster/gpu-constraints.txt" in ln)
    lock_install = next(i for i, ln in enumerate(lines) if ln.startswith("RUN") and "-r /app/cluster/gpu-constraints.txt" in ln)
    src_copy = next(i for i, ln in enumerate(lines) if re.match(r"COPY (--chown=\S+ )?\. /app$", ln))
    project = next(i for i, ln in enumerate(lines) if ln.startswith("RUN") and "pip install" in ln and "--no-deps /app" in ln)
    assert lock_copy < lock_install < src_copy < project, "dependencies from the lock before the source"
    assert not any(re.search(r"pip install[^&]* (-e|--editable)\b", ln) for ln in lines), "non-editable install"
    assert "pip check" in lines[project]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


@pytest.mark.skipif(not os.environ.get("FASTSAM2_DOCKER_BUILD"), reason="set FASTSAM2_DOCKER_BUILD=1 to build the image (needs a Docker daemon and network)")
def test_docker_build():  # pragma: no cover - opt-in
    import subprocess

    subprocess.run(["docker", "build", "-f", str(CLUSTER / "Dockerfile"), "-t", "fastsam2-batch:test", str(REPO)], check=True)


def test_what_the_dockerfile_imports_from_the_package_exists():
    """The image's build steps call into fastsam2 (e.g. baking checkpoints); a moved function
    would only fail at image build time, which CI does not run by default."""
    import importlib

    text = (CLUSTER / "Dockerfile").read_text()
    names = re.findall(r"from (fastsam2[\w.]*) import ([\w, ]+)", text)
    assert names, "the Dockerfile no longer imports from fastsam2: update this test"
    for module, attrs in names:
        mod = importlib.import_module(module)
        for attr in (a.strip() for a in attrs.split(",")):
            assert hasattr(mod, attr), f"cluster/Dockerfile imports {attr} from {module}, which has no such name"
