"""pycni.net.sysctl key handling, and read/write/ensure against a fake /proc/sys (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.net import sysctl


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        ("net/ipv4/ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        ("net.ipv6.conf.all.forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"),
        # path form keeps dots inside an interface name
        ("net/ipv4/conf/eth0.100/rp_filter", "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"),
        # dotted form: "/" stands for a literal dot (sysctl(8)'s convention)
        ("net.ipv4.conf.eth0/100.rp_filter", "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"),
        ("kernel", "/proc/sys/kernel"),
    ],
)
def test_path_for(key: str, path: str) -> None:
    assert sysctl.path_for(key) == path


@pytest.mark.parametrize(
    "key",
    [
        "",
        ".",
        "..",
        "net..ipv4",
        ".net.ipv4",
        "net.ipv4.",
        "net/../../etc/passwd",
        "net/ipv4/",
        "net//ipv4",
        "net/./ipv4",
        "net.ipv4.conf.../rp_filter",
        "/etc/passwd",
        "/proc/sys/../../etc/passwd",
        "/proc/sysfoo/x",
        "net/ipv4/ip_forward\0",
        "net.ipv4.conf./..rp_filter",
    ],
)
def test_path_for_refuses_escapes(key: str) -> None:
    with pytest.raises(CNIError) as info:
        sysctl.path_for(key)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_conf_key_keeps_dotted_ifnames() -> None:
    key = sysctl.conf_key("ipv6", "eth0.100", "accept_ra")
    assert key == "net/ipv6/conf/eth0.100/accept_ra"
    assert sysctl.path_for(key) == "/proc/sys/net/ipv6/conf/eth0.100/accept_ra"


@pytest.mark.parametrize(("family", "ifname"), [("ipx", "eth0"), ("ipv4", "a/b")])
def test_conf_key_rejects(family: str, ifname: str) -> None:
    with pytest.raises(CNIError) as info:
        sysctl.conf_key(family, ifname, "rp_filter")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


@pytest.fixture
def fake_proc_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sys"
    (root / "net" / "ipv4").mkdir(parents=True)
    (root / "net" / "ipv4" / "ip_forward").write_text("0\n")
    (root / "net" / "ipv4" / "tcp_rmem").write_text("4096\t131072\t6291456\n")
    monkeypatch.setattr(sysctl, "PROC_SYS", str(root))
    return root


def test_read_write_ensure(fake_proc_sys: Path) -> None:
    assert sysctl.read("net.ipv4.ip_forward") == "0"
    assert sysctl.ensure("net.ipv4.ip_forward", 1) is True
    assert (fake_proc_sys / "net/ipv4/ip_forward").read_text() == "1"
    assert sysctl.ensure("net.ipv4.ip_forward", "1") is False
    sysctl.write("net/ipv4/ip_forward", "0")
    assert sysctl.read("net/ipv4/ip_forward") == "0"


def test_ensure_compares_fields_not_whitespace(fake_proc_sys: Path) -> None:
    before = (fake_proc_sys / "net/ipv4/tcp_rmem").stat().st_mtime_ns
    assert sysctl.ensure("net.ipv4.tcp_rmem", "4096 131072 6291456") is False
    assert (fake_proc_sys / "net/ipv4/tcp_rmem").stat().st_mtime_ns == before


def test_read_write_errors_are_cni_errors(fake_proc_sys: Path) -> None:
    with pytest.raises(CNIError) as missing:
        sysctl.read("net.ipv4.nonexistent")
    assert missing.value.code == ErrorCode.IO_FAILURE
    assert isinstance(missing.value.__cause__, OSError)
    with pytest.raises(CNIError) as is_dir:
        sysctl.write("net.ipv4", "1")
    assert is_dir.value.code == ErrorCode.IO_FAILURE


def test_sysctl_is_stdlib_only() -> None:
    """Module-level imports must not pull pyroute2 in (plugins pay for every import)."""
    import ast

    tree = ast.parse(Path(sysctl.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "pyroute2" not in imported
