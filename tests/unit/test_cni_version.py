"""Spec versions: parsing, ordering, the supported set and negotiation (libcni's rules)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pycni.cni import version as versions
from pycni.cni.errors import CNIError, ErrorCode


def test_supported_versions_are_exactly_these() -> None:
    assert versions.SUPPORTED == ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
    assert versions.CURRENT == "1.1.0"
    assert max(versions.SUPPORTED, key=versions.parse) == versions.CURRENT


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0.3.0", (0, 3, 0)), ("1.1.0", (1, 1, 0)), ("10.20.30", (10, 20, 30)), ("0.0.0", (0, 0, 0))],
)
def test_parse(text: str, parsed: tuple[int, int, int]) -> None:
    assert versions.parse(text) == parsed


@pytest.mark.parametrize(
    "text",
    ["", "1", "1.0", "1.0.0.0", "a.b.c", "1.0.x", "v1.0.0", "1..0", " 1.0.0", "1.0.0\n", "-1.0.0"],
)
def test_parse_refuses_non_semver_with_code_1(text: str) -> None:
    with pytest.raises(CNIError) as info:
        versions.parse(text)
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION


@pytest.mark.parametrize("value", [None, 1, 1.0, ["1.0.0"]])
def test_parse_refuses_non_strings(value: object) -> None:
    with pytest.raises(CNIError) as info:
        versions.parse(cast(Any, value))
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ("0.4.0", "0.4.0", True),
        ("1.0.0", "0.4.0", True),
        ("0.3.1", "0.4.0", False),
        ("1.0.0", "1.1.0", False),
        ("0.10.0", "0.9.0", True),  # numeric, not lexical
        ("1.10.0", "1.9.0", True),
        ("0.9.0", "0.10.0", False),
    ],
)
def test_at_least(version: str, minimum: str, expected: bool) -> None:
    assert versions.at_least(version, minimum) is expected


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_require_supported_accepts(version: str) -> None:
    assert versions.require_supported(version) == version


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "1.2.0", "2.0.0", "junk"])
def test_require_supported_refuses_with_code_1(version: str) -> None:
    with pytest.raises(CNIError) as info:
        versions.require_supported(version)
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION
    assert repr(version) in info.value.details


def test_require_supported_honours_a_plugins_own_list() -> None:
    with pytest.raises(CNIError):
        versions.require_supported("0.3.1", ("0.4.0", "1.0.0"))
    assert versions.require_supported("1.0.0", ("0.4.0", "1.0.0")) == "1.0.0"


@pytest.mark.parametrize(
    ("cni_version", "cni_versions", "chosen"),
    [
        ("1.0.0", (), "1.0.0"),
        ("0.3.1", (), "0.3.1"),
        ("0.4.0", ("1.0.0", "1.1.0"), "1.1.0"),  # the highest of both
        ("1.1.0", ("0.3.1", "0.4.0"), "1.1.0"),
        ("0.4.0", ("1.0.0", "2.0.0", "1.5.0"), "1.0.0"),  # newer than ours: ignored
        ("9.9.9", ("0.3.1",), "0.3.1"),
        ("0.2.0", ("0.4.0",), "0.4.0"),  # older than we speak: ignored too
        ("", ("1.0.0",), "1.0.0"),
        ("0.3.0", ("0.3.1", "0.3.0"), "0.3.1"),
    ],
)
def test_negotiate_picks_highest_supported(
    cni_version: str, cni_versions: tuple[str, ...], chosen: str
) -> None:
    assert versions.negotiate(cni_version, cni_versions) == chosen


@pytest.mark.parametrize(
    ("cni_version", "cni_versions"),
    [("2.0.0", ()), ("0.2.0", ("0.1.0",)), ("", ()), ("1.2.0", ("3.0.0",))],
)
def test_negotiate_without_a_usable_version_is_code_1(
    cni_version: str, cni_versions: tuple[str, ...]
) -> None:
    with pytest.raises(CNIError) as info:
        versions.negotiate(cni_version, cni_versions)
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION


def test_negotiate_refuses_a_malformed_entry() -> None:
    with pytest.raises(CNIError) as info:
        versions.negotiate("1.0.0", ("1.0",))
    assert info.value.code == ErrorCode.INCOMPATIBLE_CNI_VERSION
