"""The in-process path of a plugin executable imports only what its call uses (issue #18).

A plugin executable that runs its call itself (no server, or autostart off) pays for every
module it imports, on every call. The bridge ADD and DEL (with IPAM and masquerading) run
here as a runtime runs them, and the modules they loaded are read back: none of pyroute2's
``IPRoute`` machinery (asyncio, ssl, unittest), nor what only other paths need.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pycni.net import netns
from tests.e2e.bridge_support import bridge_conflist
from tests.support import AUTOSTART_OFF

# Runs the executable as its shebang would (-IS), and lists the modules it loaded at exit.
_DRIVER = (
    "import atexit, sys\n"
    "out, exe = sys.argv[1], sys.argv[2]\n"
    "def dump():\n"
    "    with open(out, 'w') as f:\n"
    "        f.write('\\n'.join(sorted(sys.modules)))\n"
    "atexit.register(dump)\n"
    "sys.argv = [exe]\n"
    "exec(compile(open(exe).read(), exe, 'exec'), {'__name__': '__main__'})\n"
)

NOT_ON_THE_COLD_PATH = (
    "asyncio", "ssl", "unittest", "pyroute2.iproute", "pyroute2.netlink.nlsocket",
    "pyroute2.netlink.rtnl.tcmsg", "subprocess", "hashlib", "_hashlib", "shutil", "bz2",
    "lzma", "secrets",
)


def _modules(cni_bin: Path, tmp_path: Path, host_ns: str, env: dict[str, str],
             conf: bytes) -> set[str]:
    out = tmp_path / f"modules-{env['CNI_COMMAND']}"
    with netns.enter(host_ns):
        ran = subprocess.run([sys.executable, "-IS", "-c", _DRIVER, str(out),
                              str(cni_bin / "bridge")], input=conf, env=env,
                             capture_output=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return set(out.read_text().split())


def test_a_bridge_add_and_del_in_process_import_only_what_they_use(
    cni_bin: Path, tmp_path: Path, host_ns: str, container_ns: str
) -> None:
    conflist = bridge_conflist(data_dir=tmp_path / "ipam", bridge="coldbr0")  # ipMasq on
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"],
            **conflist["plugins"][0]}
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_CONTAINERID": "cold1",
            "CNI_NETNS": container_ns, "CNI_IFNAME": "eth0", "CNI_PATH": str(cni_bin),
            "PYCNI_NO_SERVER": "1", **AUTOSTART_OFF}
    for command in ("ADD", "DEL"):
        loaded = _modules(cni_bin, tmp_path, host_ns, {**base, "CNI_COMMAND": command},
                          json.dumps(conf).encode())
        assert "pycni.plugins.bridge" in loaded  # the call did run here
        heavy = sorted(m for m in loaded for p in NOT_ON_THE_COLD_PATH
                       if m == p or m.startswith(p + "."))
        assert heavy == [], f"{command}: {heavy}"

