"""The ``fastsam2-batch`` command line, one module per command group.

- :mod:`~fastsam2.cli.app`: the group (logging options, unset defaults shown as "none").
- :mod:`~fastsam2.cli.options`: the job options ``run`` and ``submit`` share, and the flag -> field map.
- :mod:`~fastsam2.cli.run`: ``run``, ``demo``.
- :mod:`~fastsam2.cli.jobs`: ``submit``, ``status``, ``stop`` (over :mod:`fastsam2.job`).
- :mod:`~fastsam2.cli.eval`, :mod:`~fastsam2.cli.report`, :mod:`~fastsam2.cli.export`,
  :mod:`~fastsam2.cli.tracking` (``train-router``).
"""

from fastsam2.cli.app import main

__all__ = ["main"]
