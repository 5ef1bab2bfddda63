"""VERSION answered from stdin's bytes with builtins only, for a plugin executable that runs
its calls itself: a bare interpreter start, not skel's imports (json, dataclasses, typing).

The answer is skel's to the byte (``skel._version_answer``): the input's ``cniVersion``
echoed (the current version when there is none) and every version we speak. This reads only
the input runtimes send (``{"cniVersion": "1.1.0"}``): a flat JSON object of plain ASCII
values. Anything else (nesting, escapes, non-ASCII, a document it cannot parse) it declines,
and skel answers with the real JSON decoder.

The versions we speak live here, where this module can read them without imports;
``pycni.cni.version`` hands them on to everyone else.
"""

__all__ = ["CURRENT", "SUPPORTED", "answer"]

# Results can be rendered in all of these; 0.1.0/0.2.0 (ip4/ip6 results) are not offered.
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"

_SPACE = " \t\r\n"
_LITERALS = {"true": True, "false": False, "null": None}


class _Declined(Exception):
    pass


def answer(data: bytes) -> bytes | None:
    """skel's VERSION output for stdin ``data`` (an empty stdin: the current version), or
    None where skel must decide."""
    asked = CURRENT
    if data:
        try:
            doc = _flat_object(data.decode("ascii"))
        except (_Declined, UnicodeDecodeError):
            return None
        found = doc.get("cniVersion")
        if isinstance(found, str) and found:
            asked = found
    listed = ", ".join(f'"{v}"' for v in SUPPORTED)
    return f'{{"cniVersion": "{asked}", "supportedVersions": [{listed}]}}\n'.encode()


def _flat_object(text: str) -> dict[str, object]:
    """``{"key": value, ...}`` with plain strings, numbers, true/false/null as values."""
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise _Declined
    doc: dict[str, object] = {}
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return _end(text, pos + 1, doc)
    while True:
        key, pos = _string(text, pos)
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ":":
            raise _Declined
        doc[key], pos = _value(text, _skip(text, pos + 1))
        pos = _skip(text, pos)
        if text[pos : pos + 1] == "}":
            return _end(text, pos + 1, doc)
        if text[pos : pos + 1] != ",":
            raise _Declined
        pos = _skip(text, pos + 1)


def _end(text: str, pos: int, doc: dict[str, object]) -> dict[str, object]:
    if _skip(text, pos) != len(text):
        raise _Declined
    return doc


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _string(text: str, pos: int) -> tuple[str, int]:
    """A string without escapes or control characters (anything else: declined)."""
    if text[pos : pos + 1] != '"':
        raise _Declined
    end = text.find('"', pos + 1)
    value = text[pos + 1 : end]
    if end < 0 or "\\" in value or not all(" " <= ch <= "~" for ch in value):
        raise _Declined
    return value, end + 1


def _value(text: str, pos: int) -> tuple[object, int]:
    if text[pos : pos + 1] == '"':
        return _string(text, pos)
    for literal, value in _LITERALS.items():
        if text.startswith(literal, pos):
            return value, pos + len(literal)
    end = _number_end(text, pos)
    return float(text[pos:end]), end


def _number_end(text: str, pos: int) -> int:
    """Where JSON's number grammar ends: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?"""
    end = pos + 1 if text[pos : pos + 1] == "-" else pos
    digits = _digits(text, end)
    if digits == end or (text[end] == "0" and digits > end + 1):
        raise _Declined
    end = digits
    if text[end : end + 1] == ".":
        end = _digits(text, end + 1, required=True)
    if text[end : end + 1] in ("e", "E"):
        sign = end + 2 if text[end + 1 : end + 2] in ("+", "-") else end + 1
        end = _digits(text, sign, required=True)
    return end


def _digits(text: str, pos: int, *, required: bool = False) -> int:
    end = pos
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    if required and end == pos:
        raise _Declined
    return end
