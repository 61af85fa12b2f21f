"""``python -m fastsam2.job [CONFIG] [--inputs URI ...] [--output URI]``: see :mod:`fastsam2.job.entry`."""

import sys

from fastsam2.job.entry import main

sys.exit(main())
