"""`pycni install`: the executables it writes and the confs it never overwrites."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pycni import install as installer
from pycni.install import CONF_SOURCE, install, render_executable
from pycni.plugins import PLUGINS

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugins"


@pytest.mark.parametrize("name", ["loopback", "none"])
def test_repo_executables_are_the_rendered_portable_form(name: str) -> None:
    """plugins/<name> and render_executable(<name>) must stay in sync."""
    path = PLUGIN_DIR / name
    assert path.read_text() == render_executable(name)
    assert os.access(path, os.X_OK)


def test_every_repo_executable_is_a_registered_plugin_rendered() -> None:
    names = sorted(p.name for p in PLUGIN_DIR.iterdir() if p.is_file())
    assert names, "plugins/ is empty"
    for name in names:
        assert name in PLUGINS, f"plugins/{name} is not in pycni.plugins.PLUGINS"
        assert (PLUGIN_DIR / name).read_text() == render_executable(name), name


def test_every_registered_plugin_has_a_repo_executable() -> None:
    missing = [n for n in PLUGINS if not (PLUGIN_DIR / n).is_file()]
    assert not missing, f"write plugins/<name> = render_executable(<name>) for {missing}"


def test_portable_form() -> None:
    text = render_executable("bridge")
    assert text.splitlines()[0] == "#!/usr/bin/env python3"
    assert "sys.path" not in text
    assert text.endswith('launch("bridge")\n')


def test_pinned_form_carries_interpreter_flags_and_import_path() -> None:
    text = render_executable(
        "none", interpreter="/opt/py/bin/python3.11", import_path=("/src", "/site")
    )
    lines = text.splitlines()
    shebang = lines[0]
    assert shebang.startswith("#!/opt/py/bin/python3.11 ")
    # Linux passes everything after the interpreter as ONE argument: it must be one word
    # that python reads as -I -S.
    flags = shebang.split(" ", 1)[1]
    assert " " not in flags
    assert flags.startswith("-")
    assert set(flags[1:]) == {"I", "S"}
    assert "sys.path[:0] = ['/src', '/site']" in lines
    assert text.endswith('launch("none")\n')
    compile(text, "none", "exec")


def test_shebang_flags_work_as_the_kernel_passes_them() -> None:
    """Run the interpreter with the flags word as a single argv entry, as execve would."""
    text = render_executable("none", interpreter=sys.executable)
    interpreter, flags = text.splitlines()[0][2:].split(" ", 1)
    probe = "import sys; print(sys.flags.isolated, sys.flags.no_site)"
    out = subprocess.run(
        [interpreter, flags, "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["1", "1"]


def test_install_writes_pinned_executables(tmp_path: Path) -> None:
    bin_dir = tmp_path / "opt" / "cni" / "bin"
    report = install(bin_dir=str(bin_dir), conf_dir=None)
    assert report.executables == tuple(str(bin_dir / n) for n in sorted(PLUGINS))
    assert (report.confs_written, report.confs_kept) == ((), ())
    assert sorted(os.listdir(bin_dir)) == sorted(PLUGINS)  # no temp files left
    for name in PLUGINS:
        path = bin_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        first = path.read_text().splitlines()[0]
        assert first.startswith(f"#!{sys.executable} ")
        assert os.path.isabs(sys.executable)


def test_installed_executable_answers_version_in_a_bare_env(tmp_path: Path) -> None:
    """A runtime execs plugins with only CNI_* set: no PATH, no PYTHONPATH, no venv."""
    install(bin_dir=str(tmp_path), conf_dir=None)
    for name in PLUGINS:
        proc = subprocess.run(
            [str(tmp_path / name)],
            input=b'{"cniVersion": "0.4.0"}',
            env={"CNI_COMMAND": "VERSION"},
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert json.loads(proc.stdout)["cniVersion"] == "0.4.0"
        assert "1.1.0" in json.loads(proc.stdout)["supportedVersions"]


def test_install_replaces_executables(tmp_path: Path) -> None:
    (tmp_path / "none").write_text("old\n")
    install(bin_dir=str(tmp_path), conf_dir=None, interpreter="/usr/bin/python3")
    assert (tmp_path / "none").read_text().startswith("#!/usr/bin/python3 ")
    install(bin_dir=str(tmp_path), conf_dir=None, interpreter="/opt/py/bin/python3")
    assert (tmp_path / "none").read_text().startswith("#!/opt/py/bin/python3 ")


def test_install_copies_confs(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc" / "cni" / "net.d"
    report = install(bin_dir=str(tmp_path / "bin"), conf_dir=str(conf_dir))
    sources = sorted(CONF_SOURCE.glob("*.conflist"))
    assert sources, "the repo ships default networks"
    assert report.confs_written == tuple(str(conf_dir / s.name) for s in sources)
    for source in sources:
        assert (conf_dir / source.name).read_bytes() == source.read_bytes()


def test_install_never_overwrites_a_conf(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    source = sorted(CONF_SOURCE.glob("*.conflist"))[0]
    edited = conf_dir / source.name
    edited.write_text('{"edited": "by the user"}')
    report = install(bin_dir=str(tmp_path / "bin"), conf_dir=str(conf_dir))
    assert edited.read_text() == '{"edited": "by the user"}'
    assert str(edited) in report.confs_kept
    assert str(edited) not in report.confs_written
    again = install(bin_dir=str(tmp_path / "bin"), conf_dir=str(conf_dir))
    assert again.confs_written == ()
    assert len(again.confs_kept) == len(list(CONF_SOURCE.glob("*.conflist")))


def test_import_path_reaches_the_repo_and_site_packages() -> None:
    paths = installer._import_path()
    assert str(REPO) in paths
    assert len(paths) == len(set(paths))
