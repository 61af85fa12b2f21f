"""``fastsam2-batch export``: a run's masks as COCO-video JSON, DAVIS PNGs or SA-V masklets."""

from __future__ import annotations

import click

from fastsam2.cli.storage_options import storage_options_option
from fastsam2.export import FORMATS, ExportError, export_run, load_category_map

RANDOM_NOTE = "note: this run used RANDOM WEIGHTS; the exported masks are meaningless (plumbing only)"


@click.command("export", context_settings={"show_default": True})
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="coco-video: one YouTube-VIS/OVIS JSON; davis: palette PNGs per frame (Annotations/<video>/); "
                   "sa-v: one masklet JSON per video.")
@click.option("--output", "-o", required=True,
              help="Where to write: a folder (or a .json file for coco-video), local or s3://.")
@click.option("--category-map", help="JSON/YAML file mapping '<video>/<obj>', '<video>' or a phrase to a category "
                                     "name. Default: the object's phrase (--text or caption), else 'object'.")
@click.option("--videos", help="Only these videos (comma-separated ids). Default: every finished video.")
@click.option("--every", type=int, default=1, help="sa-v: annotate every N-th frame (SA-V itself uses 4 at 24 fps).")
@click.option("--sav-suffix", type=click.Choice(["auto", "manual"]), default="auto",
              help="sa-v: file name <video>_<suffix>.json; 'manual' is what SAM2's training loader reads.")
@click.option("--frame-ext", default="jpg", help="coco-video: frame file names <video>/<frame:05d>.<ext>.")
@storage_options_option
def export_command(run: str, fmt: str, output: str, category_map: str | None, videos: str | None, every: int,
                   sav_suffix: str, frame_ext: str, storage_options: dict | None) -> None:
    """Export RUN (a run's output root, local or s3://) to a format training code reads.

    Reads the run one video at a time; only finished videos (with a videos/ row) are exported.
    """
    if every < 1:
        raise click.BadParameter("must be >= 1", param_hint="--every")
    try:
        cmap = load_category_map(category_map, storage_options) if category_map else None
        stats = export_run(run, output, fmt, category_map=cmap,
                           videos=[v.strip() for v in videos.split(",") if v.strip()] if videos else None,
                           every=every, sav_suffix=sav_suffix, frame_ext=frame_ext, storage_options=storage_options)
    except (ExportError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if stats.random_weights:
        click.secho(RANDOM_NOTE, fg="red", err=True)
    click.echo(f"{stats.videos} video(s), {stats.objects} object(s), {stats.frames} frame(s) -> {stats.output} ({fmt})")
