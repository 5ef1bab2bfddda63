"""The `pycni-dns`/`dnsname` plugin's config, the names it registers, and its result."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from pycni.cni import skel
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.types import DNS, Result
from pycni.dns.upstream import parse_resolv_conf
from pycni.plugins import PLUGINS
from pycni.plugins.dns import _container_ips, _with_resolver
from pycni.plugins.dns_conf import parse_dns_config, parse_for_teardown

PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "br0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/ns"},
                   {"name": "eth1", "sandbox": "/ns"}],
    "ips": [{"address": "10.5.0.2/24", "interface": 2}, {"address": "fd00::2/64", "interface": 2},
            {"address": "10.7.0.2/24", "interface": 3}, {"address": "10.5.0.1/24",
                                                         "interface": 0}],
    "dns": {"nameservers": ["10.5.0.1"], "search": ["corp.example"]},
}


def _args(plugin: str = "pycni-dns", *, cni_args: str = "", **config: Any) -> skel.CmdArgs:
    doc = {"cniVersion": "1.0.0", "name": "app", "type": plugin, "prevResult": PREV, **config}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/ns",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/bin", "CNI_ARGS": cni_args}
    return skel._build_args(PLUGINS[plugin], "ADD", env, json.dumps(doc).encode(), (None, ""))


def test_names_from_pod_name_then_this_networks_aliases_deduplicated() -> None:
    args = _args(cni_args="IgnoreUnknown=1;K8S_POD_NAME=Web;K8S_POD_NAMESPACE=x",
                 runtimeConfig={"aliases": {"app": ["www", "WEB", "api.v1"],
                                            "other": ["not-here"]}})
    assert parse_dns_config(args).names == ("web", "www", "api.v1")


def test_aliases_as_a_plain_list_the_cni_conventions_shape() -> None:
    assert parse_dns_config(_args(runtimeConfig={"aliases": ["a", "b"]})).names == ("a", "b")


def test_k8s_pod_name_is_known_without_ignore_unknown() -> None:
    assert parse_dns_config(_args(cni_args="K8S_POD_NAME=db")).names == ("db",)


@pytest.mark.parametrize("aliases", [["bad name"], ["-x"], ["a..b"], ["x" * 64], [""], "web",
                                     [3], {"app": "web"}])
def test_a_requested_alias_that_is_no_dns_name_is_refused(aliases: Any) -> None:
    with pytest.raises(CNIError) as err:
        parse_dns_config(_args(runtimeConfig={"aliases": aliases}))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_a_pod_name_that_is_no_dns_name_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_dns_config(_args(cni_args="K8S_POD_NAME=a~b")).names == ()
    assert "not registered" in capsys.readouterr().err


def test_dnsname_type_defaults_to_its_domain_and_takes_its_config() -> None:
    assert parse_dns_config(_args("dnsname", capabilities={"aliases": True})).domain == (
        "dns.podman")
    assert parse_dns_config(_args("dnsname", domainName="Corp.Test")).domain == "corp.test"
    assert parse_dns_config(_args()).domain == ""


@pytest.mark.parametrize(("key", "value", "code"), [
    ("hosts", "/etc/hosts", ErrorCode.UNSUPPORTED_FIELD),
    ("domainName", "bad domain", ErrorCode.INVALID_NETWORK_CONFIG),
    ("domainName", 5, ErrorCode.INVALID_NETWORK_CONFIG),
    ("runDir", "relative/dir", ErrorCode.INVALID_NETWORK_CONFIG),
    ("resolvConf", "/etc/../x", ErrorCode.INVALID_NETWORK_CONFIG),
])
def test_bad_keys_are_refused_naming_them(key: str, value: Any, code: ErrorCode) -> None:
    with pytest.raises(CNIError) as err:
        parse_dns_config(_args(**{key: value}))
    assert err.value.code == code
    assert key in str(err.value)


def test_teardown_keeps_a_valid_run_dir_of_an_invalid_config() -> None:
    conf = parse_for_teardown(_args(runDir="/tmp/dns-x", hosts="x"))
    assert conf.resolver.run_dir == "/tmp/dns-x"
    assert parse_for_teardown(_args(runDir="rel", hosts="x")).resolver.run_dir == (
        "/run/pycni/dns")


def test_only_the_addresses_of_cni_ifname_in_the_sandbox_are_registered() -> None:
    args = _args()
    prev = args.config.prev_result
    assert prev is not None
    assert _container_ips(args, prev) == ("10.5.0.2", "fd00::2")


def test_result_puts_the_resolver_and_the_domain_first_and_keeps_the_rest() -> None:
    args = _args("dnsname")
    prev = args.config.prev_result
    assert prev is not None
    result = _with_resolver(prev, parse_dns_config(args))
    assert result.dns == DNS(nameservers=("127.0.0.11", "10.5.0.1"),
                             search=("dns.podman", "corp.example"))
    assert result.ips == prev.ips
    assert result.interfaces == prev.interfaces
    again = _with_resolver(Result.from_dict(result.to_dict()), parse_dns_config(args))
    assert again.dns == result.dns  # a chain with it twice does not repeat it


def test_resolv_conf_nameservers_options_and_junk() -> None:
    text = """# comment
    nameserver 127.0.0.53   # systemd-resolved
    nameserver fe80::1%lo
    nameserver not-an-address
    nameserver 127.0.0.53
    search corp.example
    options edns0 timeout:3
    nameserver 10.0.0.1
    nameserver 10.0.0.2
    """
    upstreams = parse_resolv_conf(text)
    assert upstreams.servers == ("127.0.0.53", "fe80::1%lo", "10.0.0.1")  # glibc reads three
    assert upstreams.timeout == 3.0
    assert parse_resolv_conf("").servers == ()


def test_the_plugin_runs_through_skel_and_refuses_without_prev_result() -> None:
    doc = {"cniVersion": "1.0.0", "name": "app", "type": "pycni-dns"}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/nonexistent/ns",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/bin"}
    out, err = io.StringIO(), io.StringIO()
    status = skel.run(PLUGINS["pycni-dns"], env=env, stdin=io.BytesIO(json.dumps(doc).encode()),
                      stdout=out, stderr=err)
    assert status == 1
    assert json.loads(out.getvalue())["code"] == ErrorCode.INVALID_NETWORK_CONFIG
