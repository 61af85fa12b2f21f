"""What a submitted job ships: job.json without secrets, the source, and its runtime env.

``submit`` builds the JobConfig exactly as ``run`` does, writes it as ``job.json`` into a
small staging folder (with ``--package working-dir``, together with the local ``fastsam2``
source) and hands that folder to the Jobs API as the job's ``working_dir``. The cluster
then runs :data:`ENTRYPOINT` (``python -m fastsam2.job job.json``): the staged source, or
the installed package, joins the cluster and runs :func:`fastsam2.pipeline.run_pipeline`,
the same code path as a local run.

Secrets: nothing secret is written into what submit uploads. Keys, secrets and tokens
in ``--storage-options`` are stripped from the shipped ``job.json`` (the caller is told their
names); the cluster gets its own credentials: an instance role (AWS), a Kubernetes secret
mounted as ``AWS_*`` variables (KubeRay), or ``AWS_*`` variables set on the workers. By
default only the non-secret S3 settings (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ...)
travel to the job as runtime-env variables; ``--forward-aws-credentials`` (opt-in) adds
the local access keys, which are then visible to anyone who can read Ray's job info and logs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from fastsam2.config import JobConfig
from fastsam2.job.sdk import JobsUsageError

#: What the cluster runs, in the staged working_dir (cwd first on sys.path: the shipped source wins).
ENTRYPOINT = "python -m fastsam2.job job.json"
# Non-secret: forwarded unless --no-forward-aws-env.
AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
# Secret: forwarded only with --forward-aws-credentials.
AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SECRET_HINTS = ("SECRET", "TOKEN", "PASSWORD", "KEY_ID", "ACCESS_KEY", "CREDENTIAL", "API_KEY")
# Storage-option names never shipped (exact, lower case), and substrings that mark one.
SECRET_OPTION_NAMES = ("key", "secret", "token", "password", "passwd", "sas_token", "account_key",
                       "client_secret", "credentials")
SECRET_OPTION_HINTS = ("secret", "token", "password", "passwd", "access_key", "credential", "api_key", "private")


def package_root() -> Path:
    """The folder that holds the ``fastsam2`` package in use (a checkout or site-packages)."""
    import fastsam2

    return Path(fastsam2.__file__).resolve().parents[1]


def _load_mapping(path: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())  # JSON is YAML too
    except Exception as exc:  # noqa: BLE001
        raise JobsUsageError(f"--runtime-env {path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JobsUsageError(f"--runtime-env {path}: expected a mapping (e.g. env_vars:, pip:)")
    return data


def extra_requirements(extra: str) -> list[str]:
    """The requirement strings that ``pip install fastsam2-batch[extra]`` adds."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        reqs = [Requirement(r) for r in requires("fastsam2-batch") or []]
    except PackageNotFoundError:
        raise JobsUsageError("--extra needs fastsam2-batch installed (pip install -e .)") from None
    known = sorted({m.split("==")[-1].strip().strip("'\"") for r in reqs if r.marker for m in [str(r.marker)] if "extra" in m})
    picked = [r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": extra})]
    if not picked:
        raise JobsUsageError(f"--extra {extra}: fastsam2-batch has no such extra (known: {', '.join(known)})")
    return [str(Requirement(f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}{r.specifier}")) for r in picked]


def forwarded_env(forward_aws_env: bool, forward_aws_credentials: bool) -> dict[str, str]:
    names = (AWS_SETTINGS if forward_aws_env else ()) + (AWS_CREDENTIALS if forward_aws_credentials else ())
    return {n: os.environ[n] for n in names if os.environ.get(n)}


def is_secret_key(key: Any) -> bool:
    """Storage-option names that hold credentials (s3fs ``key``/``secret``/``token``, boto's aws_*_key...)."""
    if not isinstance(key, str):
        return False
    k = key.lower()
    return k in SECRET_OPTION_NAMES or any(h in k for h in SECRET_OPTION_HINTS)


def strip_secrets(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """A copy of ``value`` without credential entries, and the dotted names of those removed."""
    removed: list[str] = []
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = f"{path}.{k}" if path else str(k)
            if is_secret_key(k):
                removed.append(name)
                continue
            out[k], more = strip_secrets(v, name)
            removed += more
        return out, removed
    if isinstance(value, list):
        items = [strip_secrets(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], [n for _, ns in items for n in ns]
    return value, removed


def shipped_config(cfg: JobConfig) -> tuple[JobConfig, list[str]]:
    """The job config as it travels to the cluster: storage options without credentials."""
    options, removed = strip_secrets(cfg.storage_options)
    return cfg.model_copy(update={"storage_options": options}), removed


def stage_job(cfg: JobConfig, package: str, staging: Path) -> Path:
    """Fill ``staging`` with job.json (no secrets) and (working-dir) the fastsam2 source."""
    staging.mkdir(parents=True, exist_ok=True)
    shipped, _ = shipped_config(cfg)
    job_json = staging / "job.json"
    job_json.write_text(shipped.model_dump_json(indent=1))
    job_json.chmod(0o600)
    if package == "working-dir":
        shutil.copytree(package_root() / "fastsam2", staging / "fastsam2",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", ".*"))
    return staging


def build_runtime_env(staging: Path, *, extras: tuple[str, ...] = (), runtime_env_file: str | None = None,
                      forward_aws_env: bool = True, forward_aws_credentials: bool = False) -> dict[str, Any]:
    """The job's runtime env: our working_dir + forwarded env + extras' pip + the user's file."""
    user = _load_mapping(runtime_env_file) if runtime_env_file else {}
    if "working_dir" in user:
        raise JobsUsageError("--runtime-env must not set working_dir: submit builds it (job config and code); "
                             "use py_modules for extra code")
    env: dict[str, Any] = {k: v for k, v in user.items() if k not in ("env_vars", "pip")}
    env["working_dir"] = str(staging)
    env_vars = forwarded_env(forward_aws_env, forward_aws_credentials)
    env_vars.update({str(k): str(v) for k, v in (user.get("env_vars") or {}).items()})  # explicit wins
    env_vars.setdefault("PYTHONUNBUFFERED", "1")
    env["env_vars"] = env_vars
    pip_extra = [req for extra in extras for req in extra_requirements(extra)]
    user_pip = user.get("pip")
    if isinstance(user_pip, dict):
        env["pip"] = {**user_pip, "packages": list(user_pip.get("packages", [])) + pip_extra}
    elif user_pip or pip_extra:
        env["pip"] = list(user_pip or []) + pip_extra
    return env


def redact(runtime_env: dict[str, Any]) -> dict[str, Any]:
    """A printable copy: env var values that look secret become ***."""
    out = json.loads(json.dumps(runtime_env))
    for k in list(out.get("env_vars", {})):
        if any(h in k.upper() for h in SECRET_HINTS) or k in AWS_CREDENTIALS:
            out["env_vars"][k] = "***"
    return out


def redact_mapping(value: Any) -> Any:
    """Recursively replace values under secret-looking keys (storage_options: key, secret, token, ...)."""
    if isinstance(value, dict):
        return {k: "***" if isinstance(k, str) and any(h in k.upper() for h in (*SECRET_HINTS, "KEY", "PASS"))
                and not isinstance(v, (dict, list)) else redact_mapping(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_mapping(v) for v in value]
    return value


def absolutize(cfg: JobConfig) -> list[str]:
    """Local paths in the config refer to the cluster's filesystem: make them absolute; the ones changed."""
    local = []
    for i, uri in enumerate(cfg.inputs):
        if "://" not in uri:
            cfg.inputs[i] = os.path.abspath(uri)
            local.append(uri)
    if "://" not in cfg.output:
        cfg.output = os.path.abspath(cfg.output)
        local.append(cfg.output)
    return local
