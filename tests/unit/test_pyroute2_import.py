"""pycni.net.pyroute2_import: the in-process plugin path imports pyroute2's modules without
its package __init__, and whoever asks the package for a name still gets the full package.

Each case runs in a fresh interpreter (the test process has pyroute2 imported already)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Imported by pyroute2/__init__.py, by no module the bridge plugin needs.
INIT_ONLY = "pyroute2.ndb.main"


def _run(code: str) -> dict[str, object]:
    probe = f"import sys, json; sys.path[:0] = [{str(REPO)!r}]\n{code}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_plugin_modules_load_without_the_package_init() -> None:
    seen = _run(
        "from pycni.net.pyroute2_import import defer_package_init\n"
        "defer_package_init()\n"
        "import pycni.plugins.bridge, pycni.plugins.host_local\n"
        f"print(json.dumps({{'init_ran': {INIT_ONLY!r} in sys.modules}}))"
    )
    assert seen == {"init_ran": False}


def test_asking_the_package_for_a_name_runs_its_init_once() -> None:
    seen = _run(
        "from pycni.net.pyroute2_import import defer_package_init\n"
        "defer_package_init()\n"
        "import pycni.net.rtnl, pyroute2.iproute.linux as linux\n"
        "before = set(sys.modules)\n"
        "from pyroute2 import IPRoute, NetlinkError\n"
        "import pyroute2\n"
        "from pyroute2.netlink.exceptions import NetlinkError as Original\n"
        "print(json.dumps({'init_ran': " + repr(INIT_ONLY) + " in sys.modules,\n"
        "  'same_class': IPRoute is linux.IPRoute and NetlinkError is Original,\n"
        "  'version': isinstance(pyroute2.__version__, str),\n"
        "  'kept_modules': before <= set(sys.modules)}))"
    )
    assert seen == {"init_ran": True, "same_class": True, "version": True,
                    "kept_modules": True}


def test_a_missing_name_is_an_attribute_error() -> None:
    seen = _run(
        "from pycni.net.pyroute2_import import defer_package_init\n"
        "defer_package_init()\n"
        "import pyroute2\n"
        "print(json.dumps({'has': hasattr(pyroute2, 'NoSuchThing'),\n"
        "  'then': hasattr(pyroute2, 'IPRoute')}))"
    )
    assert seen == {"has": False, "then": True}


def test_already_imported_pyroute2_is_left_alone() -> None:
    seen = _run(
        "import pyroute2\n"
        "from pycni.net.pyroute2_import import defer_package_init\n"
        "defer_package_init()\n"
        "print(json.dumps({'same': sys.modules['pyroute2'] is pyroute2}))"
    )
    assert seen == {"same": True}
