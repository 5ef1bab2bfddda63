"""The in-process path of a plugin executable imports only what its call uses (issue #18).

A plugin executable that runs its call itself (no server, or autostart off) pays for every
module it imports, on every call. The bridge ADD and DEL (with IPAM and masquerading) run
here as a runtime runs them, and the modules they loaded are read back: none of pyroute2's
``IPRoute`` machinery (asyncio, ssl, unittest), nor what only other paths need.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pycni.net import netns
from tests.e2e.bridge_support import bridge_conflist
from tests.support import AUTOSTART_OFF, Recording, recorded, recording_argv

NOT_ON_THE_COLD_PATH = (
    "asyncio", "ssl", "unittest", "pyroute2.iproute", "pyroute2.netlink.nlsocket",
    "pyroute2.netlink.rtnl.tcmsg", "subprocess", "hashlib", "_hashlib", "shutil", "bz2",
    "lzma", "secrets", "inspect", "ast", "dis", "platform", "multiprocessing", "pathlib",
    "pyroute2.netlink.rt_files",
)


def _run(cni_bin: Path, tmp_path: Path, host_ns: str, env: dict[str, str],
         conf: bytes) -> Recording:
    """The modules the call loaded, the source texts it exec'd, whether it collected."""
    out = tmp_path / f"run-{env['CNI_COMMAND']}.json"
    with netns.enter(host_ns):
        ran = subprocess.run(recording_argv(out, str(cni_bin / "bridge")), input=conf, env=env,
                             capture_output=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return recorded(out)


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
        record = _run(cni_bin, tmp_path, host_ns, {**base, "CNI_COMMAND": command},
                      json.dumps(conf).encode())
        assert "pycni.plugins.bridge" in record.modules  # the call did run here
        heavy = sorted(m for m in record.modules for p in NOT_ON_THE_COLD_PATH
                       if m == p or m.startswith(p + "."))
        assert heavy == [], f"{command}: {heavy}"
        other_verbs = sorted({"pycni.plugins.bridge_del", "pycni.plugins.bridge_check"}
                             - {f"pycni.plugins.bridge_{command.lower()}"} & record.modules)
        assert other_verbs == [], f"{command}: {other_verbs}"
        # One call, then the exit: the collector's passes over what it imported buy nothing.
        assert not record.collector, command


# Imported before the launcher opens the code file: by the recording harness (json), by the
# launcher to choose its path, and by oneshot to open the file.
RECORDING_AND_LAUNCHER = {
    "json", "json.decoder", "json.encoder", "json.scanner", "re", "re._casefix", "re._compiler",
    "re._constants", "re._parser", "enum", "functools", "collections", "keyword", "operator",
    "reprlib", "copyreg", "types", "__future__",
    "pycni_launcher_flat", "pycni", "pycni.launcher", "pycni.server", "pycni.server.protocol",
    "pycni.warmfork", "pycni.warmfork.wire", "pycni.oneshot", "pycni.codefile", "pycni.importcache",
}


def test_every_dataclass_of_an_in_process_add_takes_its_methods_from_the_code_cache(
    cni_bin: Path, tmp_path: Path, host_ns: str, container_ns: str
) -> None:
    """The launcher enables the cache before it imports anything that makes a dataclass (skel
    and the result types come with the plugin registry); after one ADD and DEL filled the
    cache, a second ADD compiles no dataclass method at all, and imports its modules from
    the code file."""
    conflist = bridge_conflist(data_dir=tmp_path / "ipam", bridge="coldbr1")
    conf = json.dumps({"cniVersion": conflist["cniVersion"], "name": conflist["name"],
                       **conflist["plugins"][0]}).encode()
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_NETNS": container_ns,
            "CNI_IFNAME": "eth0", "CNI_PATH": str(cni_bin), "PYCNI_NO_SERVER": "1",
            **AUTOSTART_OFF}
    for command, cid in (("ADD", "warm1"), ("DEL", "warm1"), ("ADD", "cached2")):
        record = _run(cni_bin, tmp_path, host_ns,
                      {**base, "CNI_COMMAND": command, "CNI_CONTAINERID": cid}, conf)
    assert "pycni.cni.types" in record.modules
    made_here = [text.split("(")[0] for text in record.sources]
    assert made_here == []
    # Nor did it search sys.path or read a .pyc for any module it imported once the code file
    # was open: pycni's, pyroute2's and the standard library's came from it (pycni.importcache).
    # What comes before is the interpreter's start, the recording's own imports and the
    # launcher's (it decides between server and in-process before it opens anything).
    searched = {m for m in record.searched if m.split(".")[0] != "encodings"}
    assert "pycni.plugins.bridge" in record.modules
    assert searched <= RECORDING_AND_LAUNCHER, sorted(searched - RECORDING_AND_LAUNCHER)
    _run(cni_bin, tmp_path, host_ns, {**base, "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "cached2"},
         conf)

