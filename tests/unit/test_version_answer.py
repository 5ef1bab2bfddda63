"""The launcher's own VERSION answer is skel's, byte for byte, or it leaves the input to skel."""

from __future__ import annotations

import io
import random

import pytest

from pycni.cni import skel
from pycni.cni.version_answer import answer
from pycni.plugins import PLUGINS

ANSWERED = [
    b"",
    b'{"cniVersion":"1.0.0"}',
    b'{"cniVersion": "0.4.0"}\n',
    b' \t{ "cniVersion" : "1.1.0" , "name": "x", "n": -1.5e3, "t": true, "z": null }\r\n',
    b"{}",
    b'{"cniVersion": ""}',
    b'{"cniVersion": 1}',
    b'{"cniVersion": "9.9.9"}',
    b'{"cniVersion": "1.0.0", "cniVersion": "0.3.1"}',
    b'{"cniVersion": null}',
    b'{"a": 0, "b": 10, "c": 0.5, "d": 2E-3, "cniVersion": "1.0.0"}',
]
DECLINED = [
    b"   ",
    b"[]",
    b'"1.0.0"',
    b'{"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}',
    b'{"cniVersion": "1.0.\\u0030"}',
    b'{"cniVersion": "1.0.0",}',
    b'{"cniVersion": "1.0.0"} x',
    b'{"n": 01, "cniVersion": "1.0.0"}',
    b'{"n": 1., "cniVersion": "1.0.0"}',
    b'{"n": .5, "cniVersion": "1.0.0"}',
    b'{"n": +1, "cniVersion": "1.0.0"}',
    b'{"n": truex, "cniVersion": "1.0.0"}',
    '{"cniVersion": "1.0.0", "é": 1}'.encode(),
    b'{"cniVersion": "1.0.0\x01"}',
    b'{"cniVersion" "1.0.0"}',
]


def _skel(data: bytes) -> bytes:
    out = io.StringIO()
    status = skel.run(PLUGINS["bridge"], env={"CNI_COMMAND": "VERSION"}, stdin=io.BytesIO(data),
                      stdout=out, stderr=io.StringIO())
    assert status == 0
    return out.getvalue().encode()


@pytest.mark.parametrize("data", ANSWERED)
def test_the_plain_inputs_are_answered_as_skel_answers_them(data: bytes) -> None:
    assert answer(data) == _skel(data)


@pytest.mark.parametrize("data", DECLINED)
def test_anything_else_is_left_to_skel(data: bytes) -> None:
    assert answer(data) is None


def test_mangled_inputs_are_answered_as_skel_would_or_left_to_it() -> None:
    rng = random.Random(18)
    alphabet = b' {}[]":,.-+eE0123456789truefalsnl\\\x00\xff'
    for _ in range(3000):
        data = bytearray(rng.choice(ANSWERED[1:]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            if rng.random() < 0.5 and at < len(data):
                del data[at]
            else:
                data[at:at] = bytes([rng.choice(alphabet)])
        fast = answer(bytes(data))
        assert fast is None or fast == _skel(bytes(data)), bytes(data)
