"""pycni-run's command line: the implied `run`, option splitting, global options, usage errors."""

from __future__ import annotations

import pytest
from pycni_run import cli
from pycni_run.errors import RunError
from pycni_run.spec import ContainerSpec, NetMode


def _spec(*argv: str) -> ContainerSpec:
    return cli.build_spec(*cli.parse_run_args(list(argv)))


def test_options_stop_at_the_image() -> None:
    spec = _spec("--net=none", "-e", "A=1", "busybox", "sh", "-c", "echo -e x --rm")
    assert spec.image == "busybox"
    assert spec.command == ("sh", "-c", "echo -e x --rm")
    assert spec.net == NetMode("none")
    assert spec.env == (("A", "1"),)
    assert not spec.auto_remove


def test_short_option_clusters_and_attached_values() -> None:
    spec = _spec("-it", "--rm", "-p8080:80", "-eB=2", "-m", "64m", "busybox")
    assert (spec.interactive, spec.tty, spec.auto_remove) == (True, True, True)
    assert [str(p) for p in spec.ports] == ["8080->80/tcp"]
    assert spec.env == (("B", "2"),)
    assert spec.limits.memory == 64 << 20
    assert spec.command == ("sh",)  # busybox's default command


def test_every_run_option() -> None:
    spec = _spec(
        "--name",
        "web",
        "-d",
        "-w",
        "/srv",
        "--hostname",
        "h",
        "--network",
        "host",
        "--memory",
        "32m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "10",
        "--init",
        "busybox",
        "httpd",
        "-f",
    )
    assert (spec.name, spec.detach, spec.workdir, spec.hostname) == ("web", True, "/srv", "h")
    assert spec.net == NetMode("host")
    assert spec.init
    assert (spec.limits.memory, spec.limits.cpus, spec.limits.pids) == (32 << 20, 0.5, 10)
    assert len(spec.id) == 64


def test_rootfs_means_no_image_positional(tmp_path: object) -> None:
    spec = _spec("--rootfs", "/srv/root", "/bin/true", "-x")
    assert spec.rootfs == "/srv/root"
    assert spec.command == ("/bin/true", "-x")


def test_double_dash_ends_options() -> None:
    assert _spec("--net=none", "--", "busybox", "ls").command == ("ls",)


def test_default_name_is_the_short_id() -> None:
    spec = _spec("busybox", "true")
    assert spec.name == spec.id[:12]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--bogus", "busybox"],
        ["--net"],
        ["--name", "bad/name", "busybox"],
        ["--memory", "1k", "busybox"],
        ["--net=container:x", "-p", "1:2", "busybox"],
    ],
)
def test_usage_errors_are_125(argv: list[str]) -> None:
    with pytest.raises(RunError) as err:
        _spec(*argv)
    assert err.value.code == 125


def test_global_options_before_the_command() -> None:
    found, rest = cli.split_global_options(["--state-dir", "/s", "--cni-path=/a:/b", "ps", "-a"])
    assert found == {"state_dir": "/s", "cni_path": "/a:/b"}
    assert rest == ["ps", "-a"]
    with pytest.raises(RunError):
        cli.split_global_options(["--conf-dir"])


def test_main_reports_usage_errors_with_125(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--net=we/ird", "busybox", "true"]) == 125
    assert "invalid --network 'we/ird'" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert cli.main([]) == 125


def test_ps_and_inspect_need_no_root(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--state-dir", str(tmp_path), "ps", "-a"]) == 0
    assert capsys.readouterr().out.split() == [
        "NAME",
        "ID",
        "PID",
        "STATUS",
        "NET",
        "IP",
        "PORTS",
        "COMMAND",
    ]
    assert cli.main(["--state-dir", str(tmp_path), "inspect", "nosuch"]) == 125
