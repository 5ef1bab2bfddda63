"""`bandwidth` names and numbers: ifb names and aliases, tbf arithmetic, pass-through."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.skel import CmdArgs
from pycni.cni.types import PluginRequest, Result
from pycni.net import tc
from pycni.plugins import bandwidth
from pycni.plugins.bandwidth import ifb_alias, ifb_name, owns_ifb

TICK = 15.625  # /proc/net/psched on a 1 GHz-resolution clock: 1000/64 ticks per microsecond


def test_ifb_name_is_bwp_and_hex_within_ifnamsiz() -> None:
    name = ifb_name("net", "c1", "eth0")
    assert re.fullmatch(r"bwp[0-9a-f]{12}", name)
    assert name == ifb_name("net", "c1", "eth0")  # stable: DEL derives it again


@pytest.mark.parametrize(
    "other", [("net2", "c1", "eth0"), ("net", "c2", "eth0"), ("net", "c1", "eth1")]
)
def test_ifb_name_depends_on_every_part_of_the_attachment(other: tuple[str, str, str]) -> None:
    assert ifb_name(*other) != ifb_name("net", "c1", "eth0")


def test_ifb_name_parts_cannot_run_together() -> None:
    assert ifb_name("ab", "c", "eth0") != ifb_name("a", "bc", "eth0")


def test_alias_marks_the_network_and_fits_ifaliasz() -> None:
    alias = ifb_alias("net", "c1", "eth0")
    assert owns_ifb(alias, "net")
    assert not owns_ifb(alias, "net2")
    assert not owns_ifb(alias, "ne")
    assert not owns_ifb("", "net")
    assert not owns_ifb("something else", "net")
    assert alias.endswith("net/c1/eth0")
    long_alias = ifb_alias("n" * 255, "c" * 255, "eth0")
    assert len(long_alias.encode()) == 254  # the kernel refuses 255 (ERANGE)
    assert owns_ifb(long_alias, "n" * 255)


def reference_tbf(rate_bits: int, burst_bits: int, tick: float) -> tuple[int, int, int]:
    """The reference plugin's arithmetic (bandwidth/ifb_creator.go), transcribed."""
    rate, burst = rate_bits // 8, burst_bits // 8
    buffer = int(float(int(float(burst) * 1_000_000 / float(rate))) * tick)
    limit = int(float(rate) * 25_000.0 / 1_000_000) + burst
    return rate, limit, buffer


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        (8_000_000, 80_000),
        (20_000_000, 200_000),
        (1_000_000_000, 8_000_000),
        (8, 8),
        (80_000, 12_000),
    ],
)
def test_tbf_matches_the_reference_arithmetic(rate: int, burst: int) -> None:
    shape = tc.tbf_for(rate=rate // 8, burst=burst // 8, tick=TICK)
    assert (shape.rate, shape.limit, shape.buffer) == reference_tbf(rate, burst, TICK)
    assert shape.burst == burst // 8


def test_a_burst_worth_more_than_a_u32_of_ticks_is_clamped() -> None:
    # Kubernetes passes burst = MaxInt32 bits: 268 MB at 125 kB/s is 2147 s of tokens, more
    # than tc_tbf_qopt's u32 of ticks holds (~275 s); the reference overflows, we clamp.
    shape = tc.tbf_for(rate=125_000, burst=(2**31 - 1) // 8, tick=TICK)
    one_byte = 1_000_000 / 125_000 * TICK  # ticks: the clamp is to whole bytes of burst
    assert 2**32 - 1 - one_byte < shape.buffer <= 2**32 - 1
    assert shape.burst < (2**31 - 1) // 8
    assert shape.limit == int(125_000 * 0.025) + (2**31 - 1) // 8  # the queue keeps the burst


def test_a_burst_of_minutes_is_not_clamped() -> None:
    shape = tc.tbf_for(rate=100, burst=12_000, tick=TICK)  # 120 s: the kernel keeps it all
    assert (shape.burst, shape.buffer) == (12_000, 1_875_000_000)


def test_limit_is_capped_to_u32() -> None:
    shape = tc.tbf_for(rate=2**32 - 1, burst=2**32 - 2, tick=TICK)
    assert shape.limit == 2**32 - 1


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (2**32, 1), (1, 2**32)])
def test_tbf_refuses_values_outside_u32(rate: int, burst: int) -> None:
    with pytest.raises(CNIError) as err:
        tc.tbf_for(rate=rate, burst=burst, tick=TICK)
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_tick_in_usec_reads_psched(tmp_path: Any) -> None:
    psched = tmp_path / "psched"
    psched.write_text("000003e8 00000040 000f4240 3b9aca00\n")
    assert tc.tick_in_usec(str(psched)) == TICK
    with pytest.raises(CNIError):
        tc.tick_in_usec(str(tmp_path / "missing"))


PREV = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "pycni0", "mac": "02:00:00:00:00:01"},
        {"name": "veth1234", "mac": "02:00:00:00:00:02"},
        {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/var/run/netns/c1"},
    ],
    "ips": [{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 2}],
}


def args_for(config: dict[str, Any], version: str = "1.1.0") -> CmdArgs:
    doc = {"cniVersion": version, "name": "net", "type": "bandwidth", **config}
    return CmdArgs(
        command="ADD",
        container_id="c1",
        netns="/var/run/netns/c1",
        ifname="eth0",
        config=PluginRequest.from_dict(doc),
    )


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("no kernel call expected")

    monkeypatch.setattr(bandwidth, "open_ipr", refuse)
    monkeypatch.setattr(tc, "tick_in_usec", refuse)


@pytest.mark.usefixtures("no_kernel")
@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_no_limits_pass_the_result_through_without_kernel_calls(version: str) -> None:
    result = bandwidth.cmd_add(args_for({"prevResult": PREV}, version))
    assert result.to_dict() == Result.from_dict(PREV).to_dict(version)


@pytest.mark.usefixtures("no_kernel")
def test_check_without_limits_touches_nothing() -> None:
    bandwidth.cmd_check(args_for({"prevResult": PREV}))


@pytest.mark.usefixtures("no_kernel")
def test_add_without_prev_result_is_refused() -> None:
    with pytest.raises(CNIError) as err:
        bandwidth.cmd_add(args_for({"ingressRate": 1000, "ingressBurst": 800}))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert "chained" in err.value.msg


@pytest.mark.usefixtures("no_kernel")
def test_bad_config_is_refused_before_any_kernel_call() -> None:
    with pytest.raises(CNIError) as err:
        bandwidth.cmd_add(args_for({"ingressRate": 1000, "prevResult": PREV}))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG
