"""submit / status / stop without a cluster: token and address resolution, the runtime env the
job gets (and what never leaks from it), the staged job folder, job configs, ``python -m fastsam2.job``.

The same commands against a real Ray head are in tests/test_cluster_submit.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fastsam2.job import entry, sdk, staging
from fastsam2.cli import main
from fastsam2.cli.options import build_config
from fastsam2.config import ConfigError, JobConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SECRET = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No token or address from the developer's machine: an empty HOME and no RAY_* / AWS_* variables."""
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS",
              *staging.AWS_SETTINGS, *staging.AWS_CREDENTIALS):
        monkeypatch.delenv(k, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_cli_has_submit_status_stop():
    out = CliRunner().invoke(main, ["--help"]).output
    for name in ("submit", "status", "stop"):
        assert f"  {name} " in out
    help_text = CliRunner().invoke(main, ["submit", "--help"]).output
    for opt in ("--address", "--wait", "--runtime-env", "--auth-token", "--package", "--extra",
                "--forward-aws-env", "--forward-aws-credentials", "--track-gpus", "--config"):
        assert opt in help_text


# --------------------------------------------------------------------------- token, address


def test_token_resolution_order_and_the_token_never_shows(clean_env, monkeypatch, tmp_path):
    (clean_env / ".ray").mkdir()
    (clean_env / ".ray" / "auth_token").write_text("tok-home\n")
    assert sdk.resolve_token() == sdk.AuthToken("tok-home", "~/.ray/auth_token")

    path_file = tmp_path / "path-token"
    path_file.write_text("tok-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_file))
    assert sdk.resolve_token().value == "tok-path"

    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-env")
    assert sdk.resolve_token().value == "tok-env"

    flag_file = tmp_path / "flag-token"
    flag_file.write_text("  tok-flag-file \n")
    assert sdk.resolve_token(token_file=str(flag_file)).value == "tok-flag-file"

    tok = sdk.resolve_token(token="tok-flag", token_file=str(flag_file))
    assert tok.value == "tok-flag" and tok.source == "--auth-token"
    assert tok.headers() == {"Authorization": "Bearer tok-flag"}
    assert "tok-flag" not in repr(tok) and "tok-flag" not in str(tok)


def test_no_token_anywhere_sends_no_header(clean_env):
    tok = sdk.resolve_token()
    assert tok.value is None and tok.headers() == {}


@pytest.mark.parametrize("content", [None, ""])
def test_unreadable_or_empty_token_file_is_a_usage_error(clean_env, tmp_path, content):
    f = tmp_path / "tok"
    if content is not None:
        f.write_text(content)
    with pytest.raises(sdk.JobsUsageError, match="auth token file"):
        sdk.resolve_token(token_file=str(f))


def test_address_resolution(clean_env, monkeypatch):
    with pytest.raises(sdk.JobsUsageError, match="--address is required"):
        sdk.resolve_address(None)
    assert sdk.resolve_address("10.0.0.5:8265/") == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert sdk.resolve_address(None) == "http://head:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://ray.example.com")
    assert sdk.resolve_address(None) == "https://ray.example.com"
    with pytest.raises(sdk.JobsUsageError, match="http"):
        sdk.resolve_address("ray://head:10001")


def test_unreachable_head_is_one_clear_line(clean_env, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(main, ["status", "some-job", "--address", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert f"cannot reach the Ray Jobs API at http://127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- runtime env


def _dry_run(*extra: str) -> dict:
    result = CliRunner().invoke(main, ["submit", "s3://bucket/in/manifest.csv", "-o", "s3://bucket/out",
                                       "--random-weights", "--image-size", "256", "--dry-run", *extra])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    return json.loads(result.stdout)


def test_aws_settings_travel_by_default_and_credentials_only_when_asked(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.internal:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)

    env = _dry_run()["runtime_env"]["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == "http://minio.internal:9000" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env

    env = _dry_run("--forward-aws-credentials")["runtime_env"]["env_vars"]
    assert env["AWS_ACCESS_KEY_ID"] == "***" and env["AWS_SECRET_ACCESS_KEY"] == "***"  # sent, never shown

    env = _dry_run("--no-forward-aws-env")["runtime_env"]["env_vars"]
    assert not any(k.startswith("AWS_") for k in env)


def test_dry_run_hides_secrets_in_storage_options(clean_env):
    opts = json.dumps({"key": "AKIAEXAMPLE", "secret": SECRET, "client_kwargs": {"region_name": "eu-west-1"}})
    plan = _dry_run("--storage-options", opts)
    shown = plan["job_config"]["storage_options"]
    assert shown == {"key": "***", "secret": "***", "client_kwargs": {"region_name": "eu-west-1"}}


def test_dry_run_shows_the_job_it_would_submit(clean_env):
    plan = _dry_run("--track-gpus", "0.5", "--submission-id", "my-job")
    assert plan["submission_id"] == "my-job"
    assert plan["entrypoint"] == "python -m fastsam2.job job.json"
    cfg = JobConfig.model_validate(plan["job_config"])
    assert cfg.inputs == ["s3://bucket/in/manifest.csv"] and cfg.output == "s3://bucket/out"
    assert cfg.model.random_weights and cfg.model.image_size == 256 and cfg.resource("track").num_gpus == 0.5


def test_local_paths_become_absolute_with_a_note(clean_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["submit", "videos/", "-o", "out", "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["job_config"]["inputs"] == [str(tmp_path / "videos")]
    assert plan["job_config"]["output"] == str(tmp_path / "out")
    assert "must exist on the cluster's nodes" in result.stderr


def test_user_runtime_env_is_merged(clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    user = tmp_path / "env.yaml"
    user.write_text(yaml.safe_dump({"env_vars": {"HF_HOME": "/cache/hf", "AWS_DEFAULT_REGION": "us-west-2"},
                                    "pip": ["einops"], "py_modules": ["s3://bucket/mods.zip"]}))
    env = staging.build_runtime_env(tmp_path, extras=("vllm",), runtime_env_file=str(user))
    assert env["working_dir"] == str(tmp_path) and env["py_modules"] == ["s3://bucket/mods.zip"]
    assert env["env_vars"]["HF_HOME"] == "/cache/hf"
    assert env["env_vars"]["AWS_DEFAULT_REGION"] == "us-west-2"  # the file is explicit: it wins
    assert env["pip"][0] == "einops" and any(p.startswith("vllm") for p in env["pip"])

    user.write_text(yaml.safe_dump({"pip": {"packages": ["einops"], "pip_check": False}}))
    env = staging.build_runtime_env(tmp_path, extras=("vllm",), runtime_env_file=str(user))
    assert env["pip"]["pip_check"] is False and env["pip"]["packages"][0] == "einops"
    assert env["pip"]["packages"][1:] == staging.extra_requirements("vllm")

    user.write_text(yaml.safe_dump({"working_dir": "."}))
    with pytest.raises(sdk.JobsUsageError, match="working_dir"):
        staging.build_runtime_env(tmp_path, runtime_env_file=str(user))


def test_unknown_extra_names_the_known_ones():
    with pytest.raises(sdk.JobsUsageError, match="known: .*vllm"):
        staging.extra_requirements("nope")
    assert staging.extra_requirements("vllm") == ["vllm>=0.8", "ray[llm]>=2.60"]  # as pyproject.toml says


@pytest.mark.parametrize("package", ["working-dir", "installed"])
def test_staged_job_folder(tmp_path, package):
    cfg = build_config(("s3://b/in/",), output="s3://b/out", random_weights=True)
    staged = staging.stage_job(cfg, package, tmp_path / "job")
    assert JobConfig.model_validate_json((staged / "job.json").read_text()) == cfg
    assert sorted(p.name for p in staged.iterdir()) == (["fastsam2", "job.json"] if package == "working-dir" else ["job.json"])
    if package == "working-dir":  # what `python -m fastsam2.job` runs on the cluster
        assert (staged / "fastsam2" / "job" / "__main__.py").is_file() and (staged / "fastsam2" / "__init__.py").is_file()
        assert not list(staged.rglob("__pycache__"))
        assert sum(f.stat().st_size for f in staged.rglob("*") if f.is_file()) < 5 * 2**20
    else:
        assert not (staged / "fastsam2").exists()


# --------------------------------------------------------------------------- resources, configs


@pytest.mark.parametrize(("stage", "field", "value", "match"), [
    ("track", "num_gpus", 1.5, "whole"),
    ("caption", "num_gpus", 0.5, "vLLM"),     # the caption stage's own rule (vllm backend in gpu.yaml)
    ("track", "min_actors", 9, "min_actors"),
    ("track", "min_actors", 0, "min_actors"),  # StageResources' rule: a pool starts with one actor at least
])
def test_stage_resource_rules_are_the_configs(stage, field, value, match):
    ok = build_config(("s3://b/in/",), output="s3://b/o", config_file=str(REPO / "jobs" / "configs" / "gpu.yaml"))
    bad = ok.model_dump(mode="json")
    bad["resources"][stage][field] = value
    with pytest.raises(ConfigError, match=match):
        load_config(bad)
    # run and submit build their config through the same loader, so both refuse it before anything starts
    for command in ("run", "submit"):
        r = CliRunner().invoke(main, [command, "s3://b/in/", "-o", "s3://b/o", "--caption-backend", "vllm",
                                      "--resource", f"{stage}.{field}={value}", "--dry-run"])
        assert r.exit_code == 2 and match in r.output, r.output


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "jobs" / "configs").glob("*.yaml")))
def test_job_configs_are_valid(name):
    path = REPO / "jobs" / "configs" / name
    cfg = build_config(("s3://b/in/",), output="s3://b/out", config_file=str(path))
    again = entry.job_config(entry.parse_args([str(path), "--inputs", "s3://b/in/", "--output", "s3://b/out"]))
    assert again == cfg.model_copy(update={"run_id": again.run_id})  # every field, stage defaults filled alike


def test_gpu_config_resource_shapes():
    cfg = load_config(REPO / "jobs" / "configs" / "gpu.yaml", {"inputs": ["x"], "output": "y"})
    assert cfg.resource("track").num_gpus == 1                       # one GPU per SAM2 actor
    assert 0 < cfg.resource("propose").num_gpus < 1                  # fractional RPN actor
    assert cfg.resource("caption").num_gpus >= 1 and cfg.resource("caption").num_gpus.is_integer()  # vLLM
    assert cfg.prompts.caption_backend == "vllm" and cfg.resource("track").max_actors > 1


def test_job_entry_exit_codes(tmp_path, capsys, monkeypatch):
    run_job = entry
    monkeypatch.delenv("FASTSAM2_JOB_CONFIG", raising=False)
    assert run_job.main([]) == 2
    assert run_job.main([str(tmp_path / "missing.yaml")]) == 2
    assert run_job.main(['{"inputs": ["x"]}']) == 2  # no output: invalid
    assert run_job.main([json.dumps({"inputs": [str(tmp_path / "none.csv")], "output": str(tmp_path / "o")})]) == 2
    assert "manifest not found" in capsys.readouterr().err


def test_job_entry_runs_as_a_module_of_the_installed_package(tmp_path):
    """What the cluster runs: ``python -m fastsam2.job``, from any folder (no source checkout)."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "FASTSAM2_JOB_CONFIG"}
    r = subprocess.run([sys.executable, "-m", "fastsam2.job", '{"inputs": ["x"]}'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "output: Field required" in r.stderr, r.stderr
