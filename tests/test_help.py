"""Help that teaches: every option of every command has help text and shows its default."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from fastsam2.cli import main


def walk(cmd: click.Command, ctx: click.Context):
    yield cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            yield from walk(sub, click.Context(sub, info_name=name, parent=ctx, **sub.context_settings))


def undocumented() -> list[str]:
    problems = []
    for cmd, ctx in walk(main, click.Context(main, info_name="fastsam2-batch", **main.context_settings)):
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.name in ("help", "version"):
                continue
            where = f"{ctx.command_path} {p.opts[0]}"
            if not (p.help or "").strip():
                problems.append(f"{where}: no help")
                continue
            record = p.get_help_record(ctx)[1]
            shown = "[default:" in record or "required" in record.lower() or "default" in p.help.lower()
            plain_flag = p.is_flag and not p.secondary_opts  # --x on/off: off unless given
            if not shown and not plain_flag:
                problems.append(f"{where}: no default shown ({record!r})")
    return problems


def test_every_option_has_help_and_a_shown_default():
    assert undocumented() == []


def test_run_help_says_what_input_is_and_output_is_required():
    out = CliRunner().invoke(main, ["run", "--help"], terminal_width=120).output
    flat = " ".join(out.split())
    assert "INPUT: a video file, a folder of frames" in flat and "manifest" in flat
    assert "--output is required" in flat
    # The defaults shown are the job config's (flags stay unset so --config FILE values survive).
    assert re.search(r"--keep-ratio FLOAT .*?\[default: \(0\.3\)\]", flat)
    assert re.search(r"--image-size INTEGER .*?\[default: \(1024\)\]", flat)
    assert "[default: (sam2.1_hiera_t)]" in flat


@pytest.mark.parametrize("flag, value, named", [
    ("--keep-ratio", "1.5", "--keep-ratio"),
    ("--image-size", "100", "--image-size"),
])  # fmt: skip
def test_validation_errors_name_the_flag(tmp_path, flag, value, named):
    r = CliRunner().invoke(main, ["run", str(tmp_path), "-o", str(tmp_path / "o"), flag, value])
    assert r.exit_code == 2, r.output
    assert named in r.output and "pruning." not in r.output and "model." not in r.output, r.output


def test_config_file_errors_name_the_field_and_the_file(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("pruning:\n  keep_ratio: 3\n")
    r = CliRunner().invoke(main, ["run", str(tmp_path), "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert r.exit_code == 2 and "pruning.keep_ratio" in r.output and "--keep-ratio" in r.output, r.output


def test_empty_files_say_so(tmp_path):
    from fastsam2.config import VideoTask
    from fastsam2.sources import FrameReader, VideoReadError

    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty file"):
        FrameReader(VideoTask(video_id="empty", uri=str(tmp_path / "empty.mp4")))
    (tmp_path / "list.csv").write_bytes(b"")
    r = CliRunner().invoke(main, ["run", str(tmp_path / "list.csv"), "-o", str(tmp_path / "o"), "--dry-run"])
    assert r.exit_code == 1 and "empty file" in r.output and "Errno" not in r.output, r.output
