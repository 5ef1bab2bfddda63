"""``python -m pycni.dns``: the resolver (normally started on demand by the plugin)."""

import sys

from pycni.dns.main import main

sys.exit(main())
