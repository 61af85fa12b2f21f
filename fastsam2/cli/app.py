"""The ``fastsam2-batch`` command group: run, submit, status, stop, demo, eval, export, report, train-router.

One module per command group under :mod:`fastsam2.cli`, each a thin layer over click-free
library code: every job command builds a :class:`~fastsam2.config.JobConfig` through the one
loader (flags override ``--config FILE``) and hands it to the library; errors in what the user
gave come back as one line naming the cause, not a traceback.
"""

from __future__ import annotations

import click

from fastsam2.cli.eval import eval_command
from fastsam2.cli.export import export_command
from fastsam2.cli.jobs import status_command, stop_command, submit_command
from fastsam2.cli.report import report_command
from fastsam2.cli.run import demo, run
from fastsam2.cli.tracking import train_router_command
from fastsam2.logs import LEVELS
from fastsam2.logs import configure as configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Log more: same as --log-level info.")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="warning",
              help="Log level (-v is info; debug also shows SAM2's per-video progress bars).")
@click.version_option(package_name="fastsam2-batch")
def main(verbose: bool, log_level: str) -> None:
    """Auto-label video datasets with SAM2, fast: Ray pipeline, token pruning, masks to Parquet.

    Exit status of run and demo: 0 every video ok or already done; 3 some video failed
    (see errors/); 2 the run could not start (bad input, config, output or weights).
    """
    configure_logging("info" if verbose and log_level == "warning" else log_level)


for _command in (run, demo, eval_command, export_command, report_command, train_router_command, submit_command, status_command, stop_command):
    main.add_command(_command)


def _say_unset_defaults(group: click.Group) -> None:
    """Options without a value by default show "[default: (none)]" unless their help says what happens.

    ``show_default`` (on the group, inherited by every command) shows real defaults; an
    option left unset by default has nothing to show, so its help must say it.
    """
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _say_unset_defaults(cmd)
        for p in cmd.params:
            unset = p.default is None or p.default is getattr(click.core, "UNSET", None)  # click >= 8.2: UNSET
            if isinstance(p, click.Option) and not p.is_flag and not p.required and unset \
                    and p.show_default is None and "default" not in (p.help or "").lower():
                p.show_default = "none"


_say_unset_defaults(main)
