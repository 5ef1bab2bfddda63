"""pycni-run: -v, --tmpfs, --read-only, --user, -P and --entrypoint on the command line, and
the passwd/group lookup of --user (no root, no kernel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pycni_run import cli
from pycni_run.errors import RunError
from pycni_run.users import UserIds, lookup, parse_user
from pycni_run.volumes import Mount, parse_tmpfs, parse_volume

from pycni.linux import mountcalls

NOSUID_NODEV_NOEXEC = mountcalls.MS_NOSUID | mountcalls.MS_NODEV | mountcalls.MS_NOEXEC


def test_parse_volume(tmp_path: Path) -> None:
    assert parse_volume(f"{tmp_path}:/data") == Mount(kind="bind", target="/data",
                                                      source=str(tmp_path))
    ro = parse_volume(f"{tmp_path}/:/srv//x/:ro")
    assert (ro.target, ro.read_only, ro.to_doc()["RW"]) == ("/srv/x", True, False)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("named:/data", "named volumes"),
        ("{tmp}:data", "absolute"),
        ("{tmp}:/", "container's /"),
        ("{tmp}:/proc/x", "runtime's own"),
        ("{tmp}:/dev", "runtime's own"),
        ("{tmp}:/data:z", "only options"),
        ("{tmp}:/data:ro,rw", "only options"),
        ("{tmp}/missing:/data", "does not exist"),
        ("{tmp}", "HOST:CTR"),
    ],
)
def test_parse_volume_refuses(tmp_path: Path, item: str, message: str) -> None:
    with pytest.raises(RunError, match=message) as err:
        parse_volume(item.format(tmp=tmp_path))
    assert err.value.code == 125


def test_parse_tmpfs() -> None:
    plain = parse_tmpfs("/run")
    assert (plain.kind, plain.target, plain.flags, plain.data) == (
        "tmpfs", "/run", NOSUID_NODEV_NOEXEC, "mode=1777")
    tuned = parse_tmpfs("/tmp:exec,size=64m,mode=700,uid=1000,ro")
    assert tuned.flags == mountcalls.MS_NOSUID | mountcalls.MS_NODEV | mountcalls.MS_RDONLY
    assert tuned.read_only
    assert tuned.data == "size=64m,mode=700,uid=1000"
    for bad in ("tmp", "/x:size=lots", "/x:mode=9", "/x:bogus", "/"):
        with pytest.raises(RunError):
            parse_tmpfs(bad)


@pytest.mark.parametrize("text", ["", "app", "1000", "1000:1000", "app:staff", "svc$", "a.b-c"])
def test_parse_user(text: str) -> None:
    assert parse_user(text) == text


@pytest.mark.parametrize("text", [":", "a b", "1:2:3", "-x", "99999999999", "app:"])
def test_parse_user_refuses(text: str) -> None:
    with pytest.raises(RunError):
        parse_user(text)


@pytest.fixture
def etc(tmp_path: Path) -> tuple[str, str]:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\n# comment\n"
                      "app:x:1000:1000:App:/home/app:/bin/sh\nnobody:x:65534:65534::/:/x\n")
    group = tmp_path / "group"
    group.write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nwheel:x:10:root\n")
    return str(passwd), str(group)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("app", UserIds(uid=1000, gid=1000, groups=(1000, 50), home="/home/app")),
        ("1000", UserIds(uid=1000, gid=1000, groups=(1000, 50), home="/home/app")),
        ("app:staff", UserIds(uid=1000, gid=50, groups=(50,), home="/home/app")),
        ("nobody:0", UserIds(uid=65534, gid=0, groups=(0,), home="/")),
        ("4242", UserIds(uid=4242, gid=0, groups=(0,), home="/")),  # no entry: runc's default
        ("4242:4343", UserIds(uid=4242, gid=4343, groups=(4343,), home="/")),
    ],
)
def test_lookup(etc: tuple[str, str], text: str, ids: UserIds) -> None:
    assert lookup(text, passwd=etc[0], group=etc[1]) == ids


def test_lookup_refuses_unknown_names(etc: tuple[str, str], tmp_path: Path) -> None:
    with pytest.raises(RunError, match="unable to find user ghost"):
        lookup("ghost", passwd=etc[0], group=etc[1])
    with pytest.raises(RunError, match="unable to find group ghosts"):
        lookup("app:ghosts", passwd=etc[0], group=etc[1])
    missing = str(tmp_path / "none")
    assert lookup("7", passwd=missing, group=missing) == UserIds(uid=7, gid=0, groups=(0,))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # the container's file: it must not hang the runtime
    with pytest.raises(RunError, match="not a regular file"):
        lookup("app", passwd=str(fifo), group=etc[1])


def test_run_options(tmp_path: Path) -> None:
    spec = cli.build_spec(*cli.parse_run_args([
        "-v", f"{tmp_path}:/data:ro", "--tmpfs", "/run", "--read-only", "-u", "1000:1000",
        "-P", "--entrypoint", "/bin/echo", "busybox", "hi"]))
    assert [m.target for m in spec.mounts] == ["/data", "/run"]
    assert (spec.read_only, spec.user, spec.publish_all) == (True, "1000:1000", True)
    assert (spec.entrypoint, spec.command) == (("/bin/echo",), ("hi",))
    # busybox's `sh` is its default command, unless an entrypoint is given
    assert cli.build_spec(*cli.parse_run_args(["busybox"])).command == ("sh",)
    assert cli.build_spec(*cli.parse_run_args(["--entrypoint", "/bin/ls", "busybox"])).command == ()
    # a loaded image's command comes from its config later: none needed here
    assert cli.build_spec(*cli.parse_run_args(["localhost/app:1"])).command == ()


def test_run_refuses_two_mounts_on_one_path(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="duplicate mount point"):
        cli.build_spec(*cli.parse_run_args(["-v", f"{tmp_path}:/x", "--tmpfs", "/x", "busybox"]))
