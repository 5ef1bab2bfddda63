"""`ps` rows, `inspect` documents and `-f` templates, from state alone."""

from __future__ import annotations

import pytest
from pycni_run import network, rootfs, views
from pycni_run.errors import RunError
from pycni_run.state import ContainerState

RESULT = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "pycni0"},
        {"name": "eth0", "sandbox": "/run/netns/web"},
        {"name": "lo", "sandbox": "/run/netns/web"},
    ],
    "ips": [
        {"address": "10.99.0.1/16", "interface": 0},
        {"address": "10.99.0.5/16", "interface": 1, "gateway": "10.99.0.1"},
        {"address": "127.0.0.1/8", "interface": 2},
    ],
    "dns": {"nameservers": ["10.99.0.1"], "search": ["example"]},
}


def _exited() -> ContainerState:
    return ContainerState(
        name="web",
        id="b" * 64,
        image="busybox",
        command=["httpd", "-f"],
        status="exited",
        exit_code=3,
        cni_result=RESULT,
        ports=[{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    )


def test_result_ips_are_the_containers_non_loopback_addresses() -> None:
    assert network.result_ips(RESULT) == ["10.99.0.5"]
    assert network.result_ips(None) == []
    assert network.result_nameservers(RESULT) == (["10.99.0.1"], ["example"])


def test_ps_rows() -> None:
    rows = views.ps_rows([_exited()], all_=True)
    assert rows[1][:4] == ["web", "b" * 12, "-", "exited (3)"]
    assert rows[1][6] == "8080->80/tcp"
    assert views.ps_rows([_exited()], all_=False) == rows[:1]
    assert views.render_table(rows).splitlines()[0].startswith("NAME")


def test_inspect_and_templates() -> None:
    doc = views.inspect_doc(_exited())
    assert doc["State"] == {
        "Status": "exited",
        "Running": False,
        "Pid": 0,
        "ExitCode": 3,
        "StartedAt": "",
        "FinishedAt": "",
        "Error": "",
    }
    assert doc["NetworkSettings"]["IPAddress"] == "10.99.0.5"
    assert views.format_template(doc, "{{.State.ExitCode}} {{ .Name }}") == "3 web"
    with pytest.raises(RunError):
        views.format_template(doc, "{{.Nope}}")


def test_etc_files() -> None:
    assert "10.99.0.5\tweb" in rootfs.etc_hosts("web", ["10.99.0.5"])
    assert "127.0.1.1\tweb" in rootfs.etc_hosts("web", [])
    assert (
        rootfs.resolv_conf(["10.99.0.1"], ["example"]) == "nameserver 10.99.0.1\nsearch example\n"
    )


def test_resolv_conf_drops_loopback_resolvers(tmp_path: object) -> None:
    from pathlib import Path

    host = Path(str(tmp_path)) / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch lan\n")
    assert rootfs.resolv_conf([], host_file=str(host)) == "nameserver 192.0.2.1\nsearch lan\n"
    host.write_text("nameserver 127.0.0.1\n")
    assert "8.8.8.8" in rootfs.resolv_conf([], host_file=str(host))
