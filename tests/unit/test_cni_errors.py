"""CNIError and ErrorCode: the codes of the spec and the exact shape of the error document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycni.cni.errors import CNIError, ErrorCode, LinkNotFound, NetNSNotFound


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (ErrorCode.INCOMPATIBLE_CNI_VERSION, 1),
        (ErrorCode.UNSUPPORTED_FIELD, 2),
        (ErrorCode.UNKNOWN_CONTAINER, 3),
        (ErrorCode.INVALID_ENVIRONMENT, 4),
        (ErrorCode.IO_FAILURE, 5),
        (ErrorCode.DECODING_FAILURE, 6),
        (ErrorCode.INVALID_NETWORK_CONFIG, 7),
        (ErrorCode.INVALID_NETNS, 8),
        (ErrorCode.TRY_AGAIN_LATER, 11),
        (ErrorCode.PLUGIN_NOT_AVAILABLE, 50),
        (ErrorCode.LIMITED_CONNECTIVITY, 51),
        (ErrorCode.INTERNAL, 999),
    ],
)
def test_error_codes_are_the_specs(code: ErrorCode, value: int) -> None:
    assert int(code) == value


def test_code_is_stored_as_plain_int() -> None:
    err = CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "bad")
    assert err.code == 7
    assert type(err.code) is int
    assert json.loads(err.to_json())["code"] == 7


def test_plugin_specific_codes_pass_through() -> None:
    assert CNIError(123, "mine").to_dict() == {"code": 123, "msg": "mine"}


def test_document_shape_with_version_and_details() -> None:
    err = CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Invalid Configuration", "too small")
    assert err.to_dict("1.1.0") == {
        "cniVersion": "1.1.0",
        "code": 7,
        "msg": "Invalid Configuration",
        "details": "too small",
    }
    # Key order is the spec example's order.
    assert list(json.loads(err.to_json("1.1.0"))) == ["cniVersion", "code", "msg", "details"]


@pytest.mark.parametrize("version", [None, ""])
def test_document_without_known_version_has_no_cni_version(version: str | None) -> None:
    doc = CNIError(ErrorCode.IO_FAILURE, "read failed").to_dict(version)
    assert doc == {"code": 5, "msg": "read failed"}


def test_empty_details_are_omitted() -> None:
    assert "details" not in CNIError(4, "x", "").to_dict("1.0.0")


def test_str_and_repr() -> None:
    assert str(CNIError(4, "missing")) == "missing"
    assert str(CNIError(4, "missing", "CNI_PATH")) == "missing: CNI_PATH"
    assert repr(CNIError(4, "m", "d")) == "CNIError(code=4, msg='m', details='d')"


def test_is_an_exception_carrying_msg() -> None:
    with pytest.raises(CNIError) as info:
        raise CNIError(ErrorCode.TRY_AGAIN_LATER, "busy")
    assert info.value.args == ("busy",)


def test_from_dict_rebuilds_a_plugin_error() -> None:
    err = CNIError.from_dict({"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "lock"})
    assert (err.code, err.msg, err.details) == (11, "busy", "lock")


def test_from_dict_round_trips_to_dict() -> None:
    original = CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, "no daemon", "dhcp socket missing")
    again = CNIError.from_dict(json.loads(original.to_json("1.1.0")))
    assert again.to_dict("1.1.0") == original.to_dict("1.1.0")


@pytest.mark.parametrize(
    "doc",
    [None, [], "text", 7, {}, {"msg": "no code"}, {"code": "7", "msg": "string code"}],
)
def test_from_dict_of_a_non_error_is_internal_with_fallback(doc: Any) -> None:
    err = CNIError.from_dict(doc, fallback="raw output")
    assert err.code == ErrorCode.INTERNAL
    assert err.details == "raw output"


def test_netns_not_found_is_unknown_container() -> None:
    err = NetNSNotFound("/run/netns/gone", "ENOENT")
    assert isinstance(err, CNIError)
    assert err.code == ErrorCode.UNKNOWN_CONTAINER
    assert err.path == "/run/netns/gone"
    assert "/run/netns/gone" in err.msg
    assert err.details == "ENOENT"


@pytest.mark.parametrize(
    ("where", "expected"),
    [("", "link eth9 not found"), ("/run/netns/c", "link eth9 not found in /run/netns/c")],
)
def test_link_not_found(where: str, expected: str) -> None:
    err = LinkNotFound("eth9", where)
    assert isinstance(err, CNIError)
    assert err.name == "eth9"
    assert err.msg == expected
