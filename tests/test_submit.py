"""submit / status / stop without a cluster: token and address resolution, the runtime env the
job gets (and what never leaks from it), the staged job folder, job configs, run_job.py.

The same commands against a real Ray head are in tests/test_cluster_submit.py.
"""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from fastsam2 import submit
from fastsam2.cli import build_config, main
from fastsam2.config import JobConfig

REPO = Path(__file__).resolve().parents[1]
SECRET = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"


def _run_job_module():
    spec = importlib.util.spec_from_file_location("run_job", REPO / "jobs" / "run_job.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No token or address from the developer's machine: an empty HOME and no RAY_* / AWS_* variables."""
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS",
              *submit.AWS_SETTINGS, *submit.AWS_CREDENTIALS):
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
    assert submit.resolve_token() == submit.AuthToken("tok-home", "~/.ray/auth_token")

    path_file = tmp_path / "path-token"
    path_file.write_text("tok-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_file))
    assert submit.resolve_token().value == "tok-path"

    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-env")
    assert submit.resolve_token().value == "tok-env"

    flag_file = tmp_path / "flag-token"
    flag_file.write_text("  tok-flag-file \n")
    assert submit.resolve_token(token_file=str(flag_file)).value == "tok-flag-file"

    tok = submit.resolve_token(token="tok-flag", token_file=str(flag_file))
    assert tok.value == "tok-flag" and tok.source == "--auth-token"
    assert tok.headers() == {"Authorization": "Bearer tok-flag"}
    assert "tok-flag" not in repr(tok) and "tok-flag" not in str(tok)


def test_no_token_anywhere_sends_no_header(clean_env):
    tok = submit.resolve_token()
    assert tok.value is None and tok.headers() == {}


@pytest.mark.parametrize("content", [None, ""])
def test_unreadable_or_empty_token_file_is_a_usage_error(clean_env, tmp_path, content):
    f = tmp_path / "tok"
    if content is not None:
        f.write_text(content)
    with pytest.raises(click.UsageError, match="auth token file"):
        submit.resolve_token(token_file=str(f))


def test_address_resolution(clean_env, monkeypatch):
    with pytest.raises(click.UsageError, match="--address is required"):
        submit.resolve_address(None)
    assert submit.resolve_address("10.0.0.5:8265/") == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert submit.resolve_address(None) == "http://head:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://ray.example.com")
    assert submit.resolve_address(None) == "https://ray.example.com"
    with pytest.raises(click.UsageError, match="http"):
        submit.resolve_address("ray://head:10001")


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
    assert plan["entrypoint"] == "python run_job.py job.json"
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
    env = submit.build_runtime_env(tmp_path, extras=("vllm",), runtime_env_file=str(user))
    assert env["working_dir"] == str(tmp_path) and env["py_modules"] == ["s3://bucket/mods.zip"]
    assert env["env_vars"]["HF_HOME"] == "/cache/hf"
    assert env["env_vars"]["AWS_DEFAULT_REGION"] == "us-west-2"  # the file is explicit: it wins
    assert env["pip"][0] == "einops" and any(p.startswith("vllm") for p in env["pip"])

    user.write_text(yaml.safe_dump({"pip": {"packages": ["einops"], "pip_check": False}}))
    env = submit.build_runtime_env(tmp_path, extras=("vllm",), runtime_env_file=str(user))
    assert env["pip"]["pip_check"] is False and env["pip"]["packages"][0] == "einops"
    assert env["pip"]["packages"][1:] == submit.extra_requirements("vllm")

    user.write_text(yaml.safe_dump({"working_dir": "."}))
    with pytest.raises(click.UsageError, match="working_dir"):
        submit.build_runtime_env(tmp_path, runtime_env_file=str(user))


def test_unknown_extra_names_the_known_ones():
    with pytest.raises(click.UsageError, match="known: .*vllm"):
        submit.extra_requirements("nope")
    assert submit.extra_requirements("vllm") == ["vllm>=0.8", "ray[llm]>=2.60"]  # as pyproject.toml says


@pytest.mark.parametrize("package", ["working-dir", "installed"])
def test_staged_job_folder(tmp_path, package):
    cfg = build_config(("s3://b/in/",), output="s3://b/out", random_weights=True)
    staged = submit.stage_job(cfg, package, tmp_path / "job")
    assert JobConfig.model_validate_json((staged / "job.json").read_text()) == cfg
    assert (staged / "run_job.py").read_text() == (REPO / "jobs" / "run_job.py").read_text()
    if package == "working-dir":
        assert (staged / "fastsam2" / "submit.py").is_file() and (staged / "fastsam2" / "__init__.py").is_file()
        assert not list(staged.rglob("__pycache__"))
        assert sum(f.stat().st_size for f in staged.rglob("*") if f.is_file()) < 5 * 2**20
    else:
        assert not (staged / "fastsam2").exists()


# --------------------------------------------------------------------------- resources, configs


def test_resource_checks():
    ok = build_config(("s3://b/in/",), output="s3://b/o", config_file=str(REPO / "jobs" / "configs" / "gpu.yaml"))
    submit.check_resources(ok)
    bad = ok.model_copy(deep=True)
    bad.resources["track"].num_gpus = 1.5
    with pytest.raises(click.UsageError, match="whole"):
        submit.check_resources(bad)
    bad = ok.model_copy(deep=True)
    bad.resources["caption"].num_gpus = 0.5
    with pytest.raises(click.UsageError, match="vLLM"):
        submit.check_resources(bad)
    bad = ok.model_copy(deep=True)
    bad.resources["track"].min_actors = 9
    with pytest.raises(click.UsageError, match="min_actors"):
        submit.check_resources(bad)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "jobs" / "configs").glob("*.yaml")))
def test_job_configs_are_valid(name):
    path = REPO / "jobs" / "configs" / name
    cfg = build_config(("s3://b/in/",), output="s3://b/out", config_file=str(path))
    submit.check_resources(cfg)
    again = _run_job_module().load_config(str(path), inputs=["s3://b/in/"], output="s3://b/out")
    assert again.model_dump(exclude={"run_id", "resources"}) == cfg.model_dump(exclude={"run_id", "resources"})
    for stage in ("propose", "caption", "track", "write"):  # missing stages fall back to the defaults
        assert again.resource(stage) == cfg.resource(stage)


def test_gpu_config_resource_shapes():
    cfg = JobConfig.from_yaml(REPO / "jobs" / "configs" / "gpu.yaml", inputs=["x"], output="y")
    assert cfg.resource("track").num_gpus == 1                       # one GPU per SAM2 actor
    assert 0 < cfg.resource("propose").num_gpus < 1                  # fractional RPN actor
    assert cfg.resource("caption").num_gpus >= 1 and cfg.resource("caption").num_gpus.is_integer()  # vLLM
    assert cfg.prompts.caption_backend == "vllm" and cfg.resource("track").max_actors > 1


def test_run_job_exit_codes(tmp_path, capsys, monkeypatch):
    run_job = _run_job_module()
    monkeypatch.delenv(run_job.CONFIG_ENV, raising=False)
    assert run_job.main([]) == 2
    assert run_job.main([str(tmp_path / "missing.yaml")]) == 2
    assert run_job.main(['{"inputs": ["x"]}']) == 2  # no output: invalid
    assert run_job.main([json.dumps({"inputs": [str(tmp_path / "none.csv")], "output": str(tmp_path / "o")})]) == 2
    assert "manifest not found" in capsys.readouterr().err
