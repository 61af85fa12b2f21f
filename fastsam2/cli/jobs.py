"""``submit``, ``status`` and ``stop``: the same job as ``run``, on a Ray cluster, through the Jobs API.

A thin command layer over :mod:`fastsam2.job.sdk` (address, token, Jobs API errors, following
a job) and :mod:`fastsam2.job.staging` (job.json without secrets, the shipped source, the
runtime env); ``submit`` builds the JobConfig exactly as ``run`` does
(:func:`fastsam2.cli.options.build_config`), and the cluster runs ``python -m fastsam2.job``.

Exit status of ``submit --wait`` and ``status --follow``: the job's own (0 ok, 3 some video
failed, 2 could not start; see :mod:`fastsam2.job.entry`), 1 when it failed without one,
124 when ``--wait-timeout`` passed first.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from fastsam2.cli.options import build_config, job_options
from fastsam2.job.sdk import (
    WAIT_TIMEOUT_EXIT,
    AuthToken,
    JobsApiError,
    JobsUsageError,
    api_errors,
    connect,
    follow,
    job_exit_code,
    job_status,
    resolve_address,
    resolve_token,
    timestamp,
)
from fastsam2.job.staging import (
    ENTRYPOINT,
    absolutize,
    build_runtime_env,
    redact,
    redact_mapping,
    shipped_config,
    stage_job,
)


def _one_line_errors(fn):
    """The library's errors as click shows them: usage errors exit 2, Jobs API failures 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except JobsUsageError as exc:
            raise click.UsageError(str(exc)) from None
        except JobsApiError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _echo_chunk(chunk: str) -> None:
    click.echo(chunk, nl=False)
    sys.stdout.flush()


def _follow(client, job_id: str, address: str, auth: AuthToken, **kw: Any) -> str:
    return follow(client, job_id, address, auth, write=_echo_chunk, note=lambda line: click.echo(line, err=True), **kw)


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
@_one_line_errors
def submit_command(inputs: tuple[str, ...], address, auth_token, auth_token_file, wait, wait_timeout,
                   runtime_env_file, package, extras, forward_aws_env, forward_aws_credentials, submission_id,
                   entrypoint_num_cpus, dry_run, **kw: Any) -> None:
    """Submit the same job as `run` to a Ray cluster; prints the submission id."""
    cfg = build_config(inputs, **kw)  # kw: exactly the job options `run` has
    local = absolutize(cfg)
    if local:
        click.echo(f"note: local path(s) {', '.join(local)} must exist on the cluster's nodes "
                   "(use s3:// URIs for a real cluster)", err=True)
    job_id = submission_id or f"fastsam2-{cfg.run_id}"
    entrypoint = ENTRYPOINT
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
            shown["working_dir"] = f"<staging: job.json{', fastsam2/' if package == 'working-dir' else ''}>"
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
        status = _follow(client, job_id, address, auth, timeout=wait_timeout)
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting; job {job_id} keeps running (fastsam2-batch stop {job_id} to stop it)", err=True)
        sys.exit(130)
    sys.exit(_final_report(client, job_id, status, address, auth))


@click.command("status")
@click.argument("job_id")
@cluster_options
@click.option("--logs", is_flag=True, help="Print the job's logs so far.")
@click.option("--follow", "follow_", is_flag=True, help="Stream the logs until the job ends; exit as submit --wait does.")
@_one_line_errors
def status_command(job_id: str, address, auth_token, auth_token_file, logs: bool, follow_: bool) -> None:
    """Show a submitted job's status (exit 1 if it FAILED or was STOPPED)."""
    address = resolve_address(address)
    auth = resolve_token(auth_token, auth_token_file)
    client = connect(address, auth)
    if follow_:
        sys.exit(_final_report(client, job_id, _follow(client, job_id, address, auth), address, auth))
    with api_errors(address, auth, job_id):
        info = client.get_job_info(job_id)
        text = client.get_job_logs(job_id) if logs else None
    status = job_status(info.status)
    meta = info.metadata or {}
    fields = {"job": job_id, "status": status, "message": info.message, "output": meta.get("output"),
              "run_id": meta.get("run_id"), "entrypoint": info.entrypoint,
              "start": timestamp(info.start_time), "end": timestamp(info.end_time)}
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
@_one_line_errors
def stop_command(job_id: str, address, auth_token, auth_token_file, wait: bool) -> None:
    """Stop a submitted job."""
    address = resolve_address(address)
    auth = resolve_token(auth_token, auth_token_file)
    client = connect(address, auth)
    with api_errors(address, auth, job_id):
        stopped = client.stop_job(job_id)
        status = job_status(client.get_job_status(job_id))
    if not stopped:
        click.echo(f"job {job_id} was not running ({status})")
        return
    if wait:
        status = _follow(client, job_id, address, auth, stream_logs=False)
    click.echo(f"job {job_id}: stop requested ({status})")
