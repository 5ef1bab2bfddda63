"""``python -m pycni_run``: ``pycni-run`` in-process (``entry``), the daemon included."""

import sys

from pycni_run.entry import main

sys.exit(main())
