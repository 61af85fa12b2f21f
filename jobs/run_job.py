"""Entry point of a fastsam2-batch job on a Ray cluster (what ``fastsam2-batch submit`` runs).

    python run_job.py [CONFIG] [--inputs URI [URI ...]] [--output URI]

CONFIG is a JobConfig as a ``.json`` / ``.yaml`` file path or as a JSON string; with no
argument the JSON is read from the ``FASTSAM2_JOB_CONFIG`` environment variable.
``--inputs`` / ``--output`` override the config's (so one YAML in ``jobs/configs/`` serves
many datasets, e.g. from a KubeRay RayJob's entrypoint). The job
joins the cluster it runs in (``RAY_ADDRESS`` is set by the Jobs API), runs the same
pipeline as ``fastsam2-batch run`` and prints the summary, then one machine-readable line
``FASTSAM2_SUMMARY {json}``.

Exit status (the same as ``fastsam2-batch run``): 0 when every video is ok or already
done; 3 when any video failed (each has its ``errors/`` row; a re-run retries them); 2 when
the job could not start (bad config, no input found, output root not writable, unsafe
weights, stages that no node can host); 1 on anything unexpected (traceback printed). A config error names the field and
the problem, never the value given (it may be a secret).

``submit`` ships this file with the config in the job's working_dir; it can also be run
by hand, e.g. ``ray job submit --working-dir . -- python jobs/run_job.py jobs/configs/x.yaml``
(give ``inputs`` and ``output`` in that YAML).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CONFIG_ENV = "FASTSAM2_JOB_CONFIG"
EXIT_SETUP = 2  # = fastsam2.pipeline.EXIT_SETUP (kept here so a bad config never imports the library)


def load_config(arg: str | None, inputs: list[str] | None = None, output: str | None = None):
    """A validated JobConfig from a file path, a JSON string, or $FASTSAM2_JOB_CONFIG (+ overrides)."""
    import yaml

    from fastsam2.config import JobConfig

    text = arg if arg is not None else os.environ.get(CONFIG_ENV)
    if not text:
        raise ValueError(f"no job config: give a file path or JSON as the argument, or set {CONFIG_ENV}")
    if text.lstrip().startswith("{"):
        data = json.loads(text)
    else:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"job config file not found: {text}")
        try:
            data = yaml.safe_load(path.read_text()) or {}  # YAML is a superset of JSON
        except yaml.YAMLError as exc:  # name the place, never echo the text (it may hold a secret)
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValueError(f"{text}: not valid YAML{where}: {getattr(exc, 'problem', None) or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("the job config must be a mapping (inputs:, output:, model:, ...)")
    if inputs:
        data["inputs"] = list(inputs)
    if output:
        data["output"] = output
    return JobConfig.model_validate(data)


def parse_args(argv: list[str]):
    import argparse

    p = argparse.ArgumentParser(prog="run_job.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help=f"JobConfig file (.json/.yaml) or JSON string (default: ${CONFIG_ENV})")
    p.add_argument("--inputs", nargs="+", help="override the config's inputs")
    p.add_argument("--output", help="override the config's output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pydantic import ValidationError

    from fastsam2.config import describe_validation_error

    try:
        cfg = load_config(args.config, args.inputs, args.output)
    except ValidationError as exc:  # before ValueError: it is one
        print(f"fastsam2 job: invalid config: {describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_SETUP
    except ValueError as exc:
        print(f"fastsam2 job: invalid config: {exc}", file=sys.stderr)
        return EXIT_SETUP

    from fastsam2.cli import print_summary
    from fastsam2.pipeline import exit_code, run_pipeline
    from fastsam2.placement import PlacementError
    from fastsam2.sources import InputError

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


if __name__ == "__main__":
    sys.exit(main())
