"""A fastsam2-batch job on a Ray cluster, without click.

- :mod:`fastsam2.job.sdk`: the Jobs API client side (address, auth token, errors, following a job).
- :mod:`fastsam2.job.staging`: what a job ships (job.json without secrets, the source, the runtime env).
- ``python -m fastsam2.job CONFIG``: the entry point the cluster runs (:mod:`fastsam2.job.entry`).

The ``submit`` / ``status`` / ``stop`` commands (:mod:`fastsam2.cli.jobs`) are a thin layer over
these, as Ray's own ``job/cli.py`` is over its ``job/sdk.py``.
"""
