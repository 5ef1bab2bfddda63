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


_CONFIG_SEEN = (
    "from pyroute2 import config\n"
    "seen = {'uname': list(config.uname), 'machine': config.machine, 'arch': config.arch,\n"
    "        'kernel': config.kernel, 'platform': 'platform' in sys.modules,\n"
    "        'multiprocessing': 'multiprocessing' in sys.modules}\n"
)
_STAND_INS = (
    "from pycni.net.pyroute2_import import defer_package_init, stand_in_on_import\n"
    "defer_package_init()\n"
    "stand_in_on_import()\n"
)


def test_config_comes_without_platform_and_multiprocessing_and_reads_the_same() -> None:
    """What pyroute2's config reads from ``platform`` is the same through the stand-in; its
    ``multiprocessing`` names import the real module when called; either name imported later
    is the real module."""
    real = _run(_CONFIG_SEEN + "print(json.dumps(seen))")
    assert real["platform"]
    assert real["multiprocessing"]
    light = _run(
        _STAND_INS + _CONFIG_SEEN +
        "reader, writer = config.MpPipe()\n"
        "import multiprocessing.connection, platform\n"
        "seen['pipe'] = isinstance(reader, multiprocessing.connection.Connection)\n"
        "seen['real_platform'] = platform.python_version() == '%d.%d.%d' % sys.version_info[:3]\n"
        "print(json.dumps(seen))"
    )
    assert light == {**real, "platform": False, "multiprocessing": False, "pipe": True,
                     "real_platform": True}


def test_request_filters_come_without_rt_files_and_read_names_through_it() -> None:
    """pycni's requests (numbers) never read iproute2's name files; a name given for a number
    still is one, through the real rt_files imported then."""
    seen = _run(
        _STAND_INS +
        "import pycni.net.rtnl\n"
        "from pyroute2.requests.route import RouteFieldFilter\n"
        "from pyroute2.requests.main import RequestProcessor\n"
        "before = {m: m in sys.modules for m in ('pyroute2.netlink.rt_files', 'pathlib')}\n"
        "query = {'table': 'main'}\n"
        "request = RequestProcessor(context=query, prime=query)\n"
        "request.add_filter(RouteFieldFilter())\n"
        "request.finalize()\n"
        "loader = type(sys.modules['pyroute2.requests.route'].__loader__).__name__\n"
        "print(json.dumps({'before': before, 'table': request['table'],\n"
        "  'loaded': 'pyroute2.netlink.rt_files' in sys.modules, 'loader': loader}))"
    )
    assert seen == {"before": {"pyroute2.netlink.rt_files": False, "pathlib": False},
                    "table": 254, "loaded": True,
                    "loader": "SourceFileLoader"}  # its own: tracebacks read its source there


def test_a_stand_in_answers_what_it_lacks_from_the_real_module() -> None:
    seen = _run(
        "from pycni import standin\n"
        "fake = standin.make('colorsys', 'a stand-in', rgb_to_hsv=lambda *a: 'stand-in')\n"
        "module = standin.importing('json', fake)\n"
        "sys.modules['colorsys'] = fake  # a dependency holding the stand-in, as config does\n"
        "asked = fake.rgb_to_hsv(0, 0, 0)\n"
        "real = fake.hls_to_rgb(0, 0, 0)\n"
        "import colorsys\n"
        "print(json.dumps({'asked': asked, 'real': list(real),\n"
        "  'now_real': colorsys is not fake and sys.modules['colorsys'] is colorsys}))"
    )
    assert seen == {"asked": "stand-in", "real": [0, 0, 0], "now_real": True}


def test_a_stand_in_is_gone_after_the_import() -> None:
    seen = _run(
        "from pycni import standin\n"
        "fake = standin.make('colorsys', 'a stand-in')\n"
        "standin.importing('json', fake)\n"
        "print(json.dumps({'left': 'colorsys' in sys.modules}))"
    )
    assert seen == {"left": False}
