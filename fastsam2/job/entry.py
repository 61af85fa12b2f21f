"""Entry point of a fastsam2-batch job on a Ray cluster (what ``fastsam2-batch submit`` runs).

    python -m fastsam2.job [CONFIG] [--inputs URI [URI ...]] [--output URI]

CONFIG is a JobConfig as a ``.json`` / ``.yaml`` file path or as a JSON string; with no
argument the JSON is read from the ``FASTSAM2_JOB_CONFIG`` environment variable.
``--inputs`` / ``--output`` override the config's (so one YAML in ``jobs/configs/`` serves
many datasets, e.g. from a KubeRay RayJob's entrypoint). The config is read by the same
loader as ``run`` and ``submit`` (:func:`fastsam2.config.load_config`). The job joins the
cluster it runs in (``RAY_ADDRESS`` is set by the Jobs API), runs the same pipeline as
``fastsam2-batch run`` and prints the summary, then one machine-readable line
``FASTSAM2_SUMMARY {json}``.

Exit status (the same as ``fastsam2-batch run``): 0 when every video is ok or already
done; 3 when any video failed (each has its ``errors/`` row; a re-run retries them); 2 when
the job could not start (bad config, no input found, output root not writable, unsafe
weights, stages that no node can host); 1 on anything unexpected (traceback printed). A config
error names the field and the problem, never the value given (it may be a secret).

It runs from the installed package (or the source ``submit --package working-dir`` ships),
so no checkout is needed on the cluster, e.g.
``ray job submit -- python -m fastsam2.job jobs/configs/x.yaml`` (give ``inputs`` and
``output`` in that YAML, or ``--inputs`` / ``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys

from fastsam2.config import CONFIG_ENV, ConfigError, config_source, load_config


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastsam2.job", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help=f"JobConfig file (.json/.yaml) or JSON string (default: ${CONFIG_ENV})")
    p.add_argument("--inputs", nargs="+", help="override the config's inputs")
    p.add_argument("--output", help="override the config's output")
    return p.parse_args(argv)


def job_config(args: argparse.Namespace):
    """The job's :class:`~fastsam2.config.JobConfig`: its config (argument or environment), then the flags."""
    return load_config(config_source(args.config), {"inputs": args.inputs, "output": args.output})


def main(argv: list[str] | None = None) -> int:
    """Run the job; its exit status (see the module docstring)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from fastsam2.pipeline import EXIT_SETUP, exit_code, print_summary, run_pipeline
    from fastsam2.placement import PlacementError
    from fastsam2.sources import InputError

    try:
        cfg = job_config(args)
    except ConfigError as exc:
        print(f"fastsam2 job: {exc}", file=sys.stderr)
        return EXIT_SETUP

    print(f"fastsam2 job: run {cfg.run_id}: {len(cfg.inputs)} input(s) -> {cfg.output}", flush=True)
    try:
        summary = run_pipeline(cfg, progress=False)
    except (InputError, PlacementError) as exc:
        print(f"fastsam2 job: {exc}", file=sys.stderr)
        return EXIT_SETUP
    print_summary(summary)
    print("FASTSAM2_SUMMARY " + json.dumps({
        "run_id": summary.run_id, "output": summary.output, "total": summary.total,
        "skipped": summary.skipped, "ok": summary.ok, "failed": summary.failed, "masks": summary.masks,
    }), flush=True)
    if summary.failed:
        print(f"fastsam2 job: {summary.failed} video(s) failed (see errors/)", file=sys.stderr)
    return exit_code(summary)
