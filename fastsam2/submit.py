"""``submit``, ``status`` and ``stop``: the same job as ``run``, on a Ray cluster, through the Jobs API.

``submit`` builds the JobConfig exactly as ``run`` does (``fastsam2.cli_options.build_config``),
writes it as ``job.json`` into a small staging folder together with ``jobs/run_job.py``
(and, with ``--package working-dir``, the local ``fastsam2`` source), and hands that folder
to :class:`ray.job_submission.JobSubmissionClient` as the job's ``working_dir``. The
cluster then runs ``python run_job.py job.json``: the driver joins the cluster and runs
:func:`fastsam2.pipeline.run_pipeline`, the same code path as a local run.

Authentication: Ray's dashboard (and so the Jobs API) asks for a bearer token when the
head runs with token authentication (the default for a head that has ``~/.ray/auth_token``).
The token comes from ``--auth-token``, ``--auth-token-file``, ``$RAY_AUTH_TOKEN``, the file
named by ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, first found wins. It is sent as
an ``Authorization`` header and never printed; a rejected token gives one clear line.

Secrets: nothing secret is written into what submit uploads. Keys, secrets and tokens
in ``--storage-options`` are stripped from the shipped ``job.json`` (with a note naming
them); the cluster gets its own credentials: an instance role (AWS), a Kubernetes secret
mounted as ``AWS_*`` variables (KubeRay), or ``AWS_*`` variables set on the workers. By
default only the non-secret S3 settings (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ...)
travel to the job as runtime-env variables; ``--forward-aws-credentials`` (opt-in) adds
the local access keys, which are then visible to anyone who can read Ray's job info and
logs.

Exit status of ``submit --wait`` and ``status --follow``: the job's own (0 ok, 3 some video
failed, 2 could not start; see ``jobs/run_job.py``), 1 when it failed without one,
124 when ``--wait-timeout`` passed first.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import click

from fastsam2.cli_options import build_config, job_options

ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TOKEN_FILE_DEFAULT = Path("~/.ray/auth_token")
# Non-secret: forwarded unless --no-forward-aws-env.
AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
# Secret: forwarded only with --forward-aws-credentials.
AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SECRET_HINTS = ("SECRET", "TOKEN", "PASSWORD", "KEY_ID", "ACCESS_KEY", "CREDENTIAL", "API_KEY")
# Storage-option names never shipped (exact, lower case), and substrings that mark one.
SECRET_OPTION_NAMES = ("key", "secret", "token", "password", "passwd", "sas_token", "account_key",
                       "client_secret", "credentials")
SECRET_OPTION_HINTS = ("secret", "token", "password", "passwd", "access_key", "credential", "api_key", "private")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
WAIT_TIMEOUT_EXIT = 124  # like timeout(1): the job is still running


# --------------------------------------------------------------------------- address, token


def resolve_address(address: str | None) -> str:
    """The Jobs API URL: --address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS (http(s) added if missing)."""
    if not address:
        for env in ADDRESS_ENVS:
            if os.environ.get(env):
                address = os.environ[env]
                break
    if not address:
        raise click.UsageError("--address is required: the Ray dashboard URL of the head, e.g. http://HEAD:8265 "
                               "(or set RAY_API_SERVER_ADDRESS)")
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise click.UsageError(f"--address must be the dashboard's http(s) URL (e.g. http://HEAD:8265), got {address!r}")
    return address.rstrip("/")


@dataclass(frozen=True)
class AuthToken:
    """A token and where it came from (the source is safe to print; the token never is)."""

    value: str | None
    source: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"AuthToken(source={self.source!r}, value={'***' if self.value else None})"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"} if self.value else {}


def _read_token_file(path: Path, what: str) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as exc:
        raise click.UsageError(f"cannot read the auth token file given by {what} ({path}): {exc.strerror}") from None
    if not token:
        raise click.UsageError(f"the auth token file given by {what} ({path}) is empty")
    return token


def resolve_token(token: str | None = None, token_file: str | None = None) -> AuthToken:
    """First of: --auth-token, --auth-token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token:
        return AuthToken(token.strip(), "--auth-token")
    if token_file:
        return AuthToken(_read_token_file(Path(token_file), "--auth-token-file"), f"--auth-token-file {token_file}")
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return AuthToken(os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN")
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        path = os.environ["RAY_AUTH_TOKEN_PATH"]
        return AuthToken(_read_token_file(Path(path), "$RAY_AUTH_TOKEN_PATH"), f"$RAY_AUTH_TOKEN_PATH ({path})")
    default = TOKEN_FILE_DEFAULT.expanduser()
    if default.is_file():
        value = default.read_text().strip()
        if value:
            return AuthToken(value, str(TOKEN_FILE_DEFAULT))
    return AuthToken(None, "none")


def _auth_failure(address: str, auth: AuthToken, status: int) -> click.ClickException:
    if status == 401 or not auth.value:
        return click.ClickException(
            f"the Ray dashboard at {address} requires an auth token and none was sent. Give it with "
            f"$RAY_AUTH_TOKEN, --auth-token-file FILE or {TOKEN_FILE_DEFAULT} (on the head: `ray get-auth-token`)."
        )
    return click.ClickException(
        f"the Ray dashboard at {address} rejected the auth token from {auth.source} (HTTP {status}): "
        f"it is not the head's token (on the head: `ray get-auth-token`)."
    )


@contextmanager
def api_errors(address: str, auth: AuthToken, job_id: str | None = None) -> Iterator[None]:
    """Turn Jobs API failures into one-line errors naming the cause (never the token)."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        raise _auth_failure(address, auth, 403 if "Authentication failed" in str(exc) else 401) from None
    except (ConnectionError, requests.exceptions.ConnectionError):
        raise click.ClickException(
            f"cannot reach the Ray Jobs API at {address}: is the head running, and is this its dashboard "
            f"address (port 8265 by default)?") from None
    except requests.exceptions.RequestException as exc:
        raise click.ClickException(f"Jobs API request to {address} failed: {type(exc).__name__}") from None
    except RuntimeError as exc:
        msg = str(exc)
        if job_id and "404" in msg:
            raise click.ClickException(f"no job {job_id!r} on the cluster at {address}") from None
        if "status code 401" in msg or "status code 403" in msg:
            raise _auth_failure(address, auth, 403 if "403" in msg else 401) from None
        if auth.value:
            msg = msg.replace(auth.value, "***")
        raise click.ClickException(f"Jobs API at {address}: {msg}") from None


def connect(address: str, auth: AuthToken):
    """A JobSubmissionClient that sends our token (and only ours)."""
    from ray.job_submission import JobSubmissionClient

    with api_errors(address, auth):
        return JobSubmissionClient(address, headers=auth.headers())


# --------------------------------------------------------------------------- runtime env


def repo_root() -> Path:
    """The checkout that holds fastsam2/ and jobs/ (submit ships from a source checkout)."""
    import fastsam2

    return Path(fastsam2.__file__).resolve().parents[1]


def _load_mapping(path: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())  # JSON is YAML too
    except Exception as exc:  # noqa: BLE001
        raise click.UsageError(f"--runtime-env {path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"--runtime-env {path}: expected a mapping (e.g. env_vars:, pip:)")
    return data


def extra_requirements(extra: str) -> list[str]:
    """The requirement strings that ``pip install fastsam2-batch[extra]`` adds."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        reqs = [Requirement(r) for r in requires("fastsam2-batch") or []]
    except PackageNotFoundError:
        raise click.UsageError("--extra needs fastsam2-batch installed (pip install -e .)") from None
    known = sorted({m.split("==")[-1].strip().strip("'\"") for r in reqs if r.marker for m in [str(r.marker)] if "extra" in m})
    picked = [r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": extra})]
    if not picked:
        raise click.UsageError(f"--extra {extra}: fastsam2-batch has no such extra (known: {', '.join(known)})")
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


def shipped_config(cfg) -> tuple[Any, list[str]]:
    """The job config as it travels to the cluster: storage options without credentials."""
    options, removed = strip_secrets(cfg.storage_options)
    return cfg.model_copy(update={"storage_options": options}), removed


def stage_job(cfg, package: str, staging: Path) -> Path:
    """Fill ``staging`` with job.json (no secrets), run_job.py and (working-dir) the fastsam2 source."""
    run_job = repo_root() / "jobs" / "run_job.py"
    if not run_job.is_file():
        raise click.ClickException(f"{run_job} not found: run submit from a source checkout of fastsam2-batch")
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run_job, staging / "run_job.py")
    shipped, _ = shipped_config(cfg)
    job_json = staging / "job.json"
    job_json.write_text(shipped.model_dump_json(indent=1))
    job_json.chmod(0o600)
    if package == "working-dir":
        shutil.copytree(repo_root() / "fastsam2", staging / "fastsam2",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", ".*"))
    return staging


def build_runtime_env(staging: Path, *, extras: tuple[str, ...] = (), runtime_env_file: str | None = None,
                      forward_aws_env: bool = True, forward_aws_credentials: bool = False) -> dict[str, Any]:
    """The job's runtime env: our working_dir + forwarded env + extras' pip + the user's file."""
    user = _load_mapping(runtime_env_file) if runtime_env_file else {}
    if "working_dir" in user:
        raise click.UsageError("--runtime-env must not set working_dir: submit builds it (job config and code); "
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


def _absolutize(cfg) -> list[str]:
    """Local paths in the config refer to the cluster's filesystem: make them absolute, say so."""
    local = []
    for i, uri in enumerate(cfg.inputs):
        if "://" not in uri:
            cfg.inputs[i] = os.path.abspath(uri)
            local.append(uri)
    if "://" not in cfg.output:
        cfg.output = os.path.abspath(cfg.output)
        local.append(cfg.output)
    return local


def check_resources(cfg) -> None:
    """Catch resource settings a cluster cannot satisfy before they sit pending there."""
    for stage, res in cfg.resources.items():
        if res.num_gpus < 0 or res.num_cpus < 0:
            raise click.UsageError(f"resources.{stage}: GPUs and CPUs must be >= 0")
        if res.num_gpus > 1 and res.num_gpus != int(res.num_gpus):
            raise click.UsageError(f"resources.{stage}.num_gpus={res.num_gpus}: above 1 GPU per actor must be whole")
        if res.min_actors < 0 or res.max_actors < max(1, res.min_actors):
            raise click.UsageError(f"resources.{stage}: need 0 <= min_actors <= max_actors and max_actors >= 1")
        if res.batch_size < 1:
            raise click.UsageError(f"resources.{stage}.batch_size must be >= 1")
    caption = cfg.resources.get("caption")
    if cfg.prompts.caption_backend == "vllm" and caption and caption.num_gpus and caption.num_gpus != int(caption.num_gpus):
        raise click.UsageError(f"resources.caption.num_gpus={caption.num_gpus}: vLLM engines take whole GPUs")


# --------------------------------------------------------------------------- following a job


def follow(client, job_id: str, address: str, auth: AuthToken, timeout: float | None = None,
           stream_logs: bool = True) -> str:
    """Stream the job's logs to stdout until it ends; its final status (or RUNNING on timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            click.echo(chunk, nl=False)
            sys.stdout.flush()

    if stream_logs:
        from ray.exceptions import AuthenticationError

        try:
            asyncio.run(asyncio.wait_for(_tail(), timeout))
        except asyncio.TimeoutError:
            pass
        except AuthenticationError as exc:
            raise _auth_failure(address, auth, 403 if "Authentication failed" in str(exc) else 401) from None
        except Exception as exc:  # noqa: BLE001 - the log stream is best effort; the status below decides
            click.echo(f"(log stream ended: {type(exc).__name__}; polling the job's status)", err=True)
    while True:
        with api_errors(address, auth, job_id):
            status = _status(client.get_job_status(job_id))
        if status in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return status
        time.sleep(1.0)


def job_exit_code(message: str | None) -> int:
    """The entrypoint's exit status from Ray's job message (``... failed with exit code 3 ...``), else 1."""
    import re

    match = re.search(r"exit code (\d+)", message or "")
    code = int(match.group(1)) if match else 1
    return code if 0 < code < 256 else 1


def _final_report(client, job_id: str, status: str, address: str, auth: AuthToken) -> int:
    with api_errors(address, auth, job_id):
        info = client.get_job_info(job_id)
    if status == "SUCCEEDED":
        click.echo(f"job {job_id} SUCCEEDED", err=True)
        return 0
    if status in ("FAILED", "STOPPED"):
        click.secho(f"job {job_id} {status}: {info.message or ''}".rstrip(": "), fg="red", err=True)
        return job_exit_code(info.message) if status == "FAILED" else 1
    click.echo(f"job {job_id} still {status} after --wait-timeout; it keeps running "
               f"(fastsam2-batch stop {job_id} --address {address} to stop it)", err=True)
    return WAIT_TIMEOUT_EXIT


# --------------------------------------------------------------------------- commands


def cluster_options(fn):
    options = [
        click.option("--address", help="Ray dashboard URL of the head, e.g. http://HEAD:8265 "
                     "(default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)."),
        click.option("--auth-token", help="Ray auth token (prefer $RAY_AUTH_TOKEN or a file: "
                     "command lines are visible to other users). Default: $RAY_AUTH_TOKEN, the file "
                     "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."),
        click.option("--auth-token-file", type=click.Path(dir_okay=False), help="File holding the Ray auth token."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


@click.command("submit")
@click.argument("inputs", nargs=-1)
@job_options
@cluster_options
@click.option("--wait", is_flag=True, help="Stream the job's logs until it ends; exit with the job's status (0 ok, 3 some video failed, 2 could not start).")
@click.option("--wait-timeout", type=float, help=f"With --wait: give up waiting after this many seconds (exit {WAIT_TIMEOUT_EXIT}; the job keeps running).")
@click.option("--runtime-env", "runtime_env_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/JSON runtime env merged into the job's (env_vars, pip, py_modules, image_uri, ...).")
@click.option("--package", type=click.Choice(["working-dir", "installed"]), default="working-dir", show_default=True,
              help="working-dir: ship this checkout's fastsam2 source with the job (the cluster needs only the "
                   "dependencies, e.g. the worker image); installed: use the fastsam2 installed on the cluster.")
@click.option("--extra", "extras", multiple=True, help="Install this extra's requirements on the cluster via the runtime env (e.g. vllm).")
@click.option("--forward-aws-env/--no-forward-aws-env", default=True, show_default=True,
              help="Send the local non-secret S3 settings (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_REGION) to the job.")
@click.option("--forward-aws-credentials", is_flag=True,
              help="Also send AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (visible to Jobs API "
                   "readers; on AWS prefer instance roles).")
@click.option("--submission-id", help="Job id on the cluster (default: fastsam2-<run id>).")
@click.option("--entrypoint-num-cpus", type=float, default=0.0, show_default=True, help="CPUs reserved for the job's driver.")
@click.option("--dry-run", is_flag=True, help="Print the entrypoint and runtime env (secrets redacted); submit nothing.")
def submit_command(inputs: tuple[str, ...], address, auth_token, auth_token_file, wait, wait_timeout,
                   runtime_env_file, package, extras, forward_aws_env, forward_aws_credentials, submission_id,
                   entrypoint_num_cpus, dry_run, **kw: Any) -> None:
    """Submit the same job as `run` to a Ray cluster; prints the submission id."""
    cfg = build_config(inputs, **kw)  # kw: exactly the job options `run` has
    check_resources(cfg)
    local = _absolutize(cfg)
    if local:
        click.echo(f"note: local path(s) {', '.join(local)} must exist on the cluster's nodes "
                   "(use s3:// URIs for a real cluster)", err=True)
    job_id = submission_id or f"fastsam2-{cfg.run_id}"
    entrypoint = "python run_job.py job.json"
    _, withheld = shipped_config(cfg)
    if withheld:
        click.echo(f"note: storage option(s) {', '.join(withheld)} are not shipped to the cluster; it needs its "
                   "own credentials (instance role, Kubernetes secret or AWS_* variables on the workers; "
                   "--forward-aws-credentials sends your local AWS_* keys, visible to Jobs API readers)", err=True)
    with tempfile.TemporaryDirectory(prefix="fastsam2-submit-") as tmp:
        staging = stage_job(cfg, package, Path(tmp) / "job")
        runtime_env = build_runtime_env(staging, extras=extras, runtime_env_file=runtime_env_file,
                                        forward_aws_env=forward_aws_env, forward_aws_credentials=forward_aws_credentials)
        if dry_run:
            shown = redact(runtime_env)
            shown["working_dir"] = f"<staging: run_job.py, job.json{', fastsam2/' if package == 'working-dir' else ''}>"
            click.echo(json.dumps({"submission_id": job_id, "entrypoint": entrypoint, "runtime_env": shown,
                                   "job_config": {**json.loads(cfg.model_dump_json()),
                                                  "storage_options": redact_mapping(cfg.storage_options)}},
                                  indent=1))
            return
        address = resolve_address(address)
        auth = resolve_token(auth_token, auth_token_file)
        client = connect(address, auth)
        with api_errors(address, auth):
            job_id = client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id,
                metadata={"tool": "fastsam2-batch", "run_id": cfg.run_id, "output": cfg.output},
                entrypoint_num_cpus=entrypoint_num_cpus or None,
            )
    click.echo(job_id)
    if cfg.model.random_weights:
        click.secho("note: --random-weights: masks will be meaningless (plumbing/speed run)", fg="yellow", err=True)
    if not wait:
        click.echo(f"follow: fastsam2-batch status {job_id} --address {address} --follow   |   "
                   f"stop: fastsam2-batch stop {job_id} --address {address}", err=True)
        return
    try:
        status = follow(client, job_id, address, auth, timeout=wait_timeout)
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting; job {job_id} keeps running (fastsam2-batch stop {job_id} to stop it)", err=True)
        sys.exit(130)
    sys.exit(_final_report(client, job_id, status, address, auth))


@click.command("status")
@click.argument("job_id")
@cluster_options
@click.option("--logs", is_flag=True, help="Print the job's logs so far.")
@click.option("--follow", "follow_", is_flag=True, help="Stream the logs until the job ends; exit as submit --wait does.")
def status_command(job_id: str, address, auth_token, auth_token_file, logs: bool, follow_: bool) -> None:
    """Show a submitted job's status (exit 1 if it FAILED or was STOPPED)."""
    address = resolve_address(address)
    auth = resolve_token(auth_token, auth_token_file)
    client = connect(address, auth)
    if follow_:
        sys.exit(_final_report(client, job_id, follow(client, job_id, address, auth), address, auth))
    with api_errors(address, auth, job_id):
        info = client.get_job_info(job_id)
        text = client.get_job_logs(job_id) if logs else None
    status = _status(info.status)
    meta = info.metadata or {}
    fields = {"job": job_id, "status": status, "message": info.message, "output": meta.get("output"),
              "run_id": meta.get("run_id"), "entrypoint": info.entrypoint,
              "start": _ts(info.start_time), "end": _ts(info.end_time)}
    for k, v in fields.items():
        if v:
            click.echo(f"{k:>10}: {v}")
    if text is not None:
        click.echo(text, nl=False)
    if status in ("FAILED", "STOPPED"):
        sys.exit(1)


@click.command("stop")
@click.argument("job_id")
@cluster_options
@click.option("--wait", is_flag=True, help="Wait until the job has stopped.")
def stop_command(job_id: str, address, auth_token, auth_token_file, wait: bool) -> None:
    """Stop a submitted job."""
    address = resolve_address(address)
    auth = resolve_token(auth_token, auth_token_file)
    client = connect(address, auth)
    with api_errors(address, auth, job_id):
        stopped = client.stop_job(job_id)
        status = _status(client.get_job_status(job_id))
    if not stopped:
        click.echo(f"job {job_id} was not running ({status})")
        return
    if wait:
        status = follow(client, job_id, address, auth, stream_logs=False)
    click.echo(f"job {job_id}: stop requested ({status})")


def _status(status) -> str:
    return str(getattr(status, "value", status))


def _ts(ms: int | None) -> str | None:
    if not ms:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")
