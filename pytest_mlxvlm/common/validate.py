"""Reading files that may be anything: one safe JSON loader and checks of a document's fields.

Every problem is an InvalidInput whose message is one line saying which field is wrong and how
(``results[0].samples[0].ttft_s: 'fast' is not a number``); the reader adds the file's name."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MAX_DEPTH = 64  # no file of the plugin nests deeper than a handful of levels


class InvalidInput(ValueError):
    """A document of the wrong shape or content; the message is one line."""


class NotJSON(InvalidInput):
    """Text that is not JSON; ``reason`` says why without the position, ``column`` where on its
    line (None when unknown)."""

    def __init__(self, reason: str, position: str = "", column: int | None = None) -> None:
        super().__init__(f"invalid JSON ({reason}{position})")
        self.reason = reason
        self.column = column

    def on_its_line(self) -> str:
        """Why, and where on the line: ``Invalid control character at column 57``."""
        if self.column is None:
            return self.reason
        return f"{self.reason}{'' if self.reason.endswith(' at') else ' at'} column {self.column}"


def kind(value: Any) -> str:
    """What a JSON value is, for messages: ``a list``, ``an object``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def show(value: Any, limit: int = 40) -> str:
    """A value in a message, cut short: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str | bytes, limit: int | None = 300) -> str:
    """Text from outside (a server's answer, a log's tail) safe for a terminal and a JSON
    report: control characters (ESC, NUL, ...) as ``\\x1b``-style escapes, line breaks and tabs
    as spaces, cut at ``limit`` characters with `` …`` (None: not cut)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = []
    for char in text:
        if char in "\t\n\r":
            out.append(" ")
        elif char.isprintable() or char == " ":
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        if limit is not None and len(out) > limit:
            break
    clean = "".join(out)
    return clean if limit is None or len(clean) <= limit else clean[:limit] + " …"


def schema_is(value: Any, version: int) -> bool:
    """Whether a file's ``schema_version`` is the integer ``version``: not ``true``, not ``1.0``."""
    return type(value) is int and value == version


def _no_constant(name: str) -> Any:
    raise NotJSON(f"{name}: JSON has no NaN or Infinity")


def _depth(doc: Any) -> int:
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value)
                         if isinstance(v, (dict, list)))
    return deepest


def loads(text: str, *, nonfinite: bool = False) -> Any:
    """Parse JSON; InvalidInput for invalid JSON, nesting deeper than MAX_DEPTH, an integer too
    long to parse and, unless ``nonfinite``, NaN and Infinity (which Python's json accepts)."""
    try:
        doc = json.loads(text, parse_constant=None if nonfinite else _no_constant)
    except json.JSONDecodeError as exc:
        where = ": " if exc.msg.endswith(" at") else " at "  # "Unterminated string starting at"
        raise NotJSON(exc.msg, f"{where}line {exc.lineno} column {exc.colno}", exc.colno) from None
    except RecursionError:
        raise InvalidInput(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    except NotJSON:
        raise
    except ValueError as exc:  # an integer of more than 4300 digits
        raise NotJSON(str(exc).split(":")[0]) from None
    if _depth(doc) > MAX_DEPTH:
        raise InvalidInput(f"nested too deeply (more than {MAX_DEPTH} levels)")
    return doc


def read_json(path: Path, *, nonfinite: bool = False) -> Any:
    """A file's JSON; InvalidInput also when it cannot be read or is not UTF-8 text."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8 text") from None
    return loads(text, nonfinite=nonfinite)


# -- fields -------------------------------------------------------------------------------------

def _name(where: str) -> str:
    """``machine`` -> ``'machine'`` (a top-level field); paths stay as written."""
    if not where:
        return "the top level"
    return repr(where) if where.isidentifier() else where


def _typed(value: Any, types: type | tuple[type, ...], expected: str, where: str, optional: bool) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise InvalidInput(f"{_name(where)} is {kind(value)}, not {expected}")
    if not isinstance(value, types):
        raise InvalidInput(f"{_name(where)} is {kind(value)}, not {expected}")
    return value


def get(doc: dict[str, Any], key: str, where: str = "") -> Any:
    """A required field of an object."""
    if key not in doc:
        raise InvalidInput(f"{where}: missing field {key!r}" if where else f"missing field {key!r}")
    return doc[key]


def join(where: str, key: str | int) -> str:
    """The path of a field or an item: ``results`` + 0 -> ``results[0]``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def obj(value: Any, where: str, *, optional: bool = False) -> dict[str, Any]:
    """An object; ``optional``: null (or absent, passed as None) is an empty one."""
    return _typed(value, dict, "an object", where, optional) or {}


def lst(value: Any, where: str, *, optional: bool = False, nonempty: bool = False) -> list[Any]:
    items = _typed(value, list, "a list", where, optional) or []
    if nonempty and not items:
        raise InvalidInput(f"{where}: empty")
    return items


def text(value: Any, where: str, *, optional: bool = False) -> str | None:
    return _typed(value, str, "a string", where, optional)


def finite(value: Any) -> bool:
    """A JSON number that a float holds and that is not NaN or infinite (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float, 10**400
        return False


def number(value: Any, where: str, *, optional: bool = False, minimum: float | None = None,
           positive: bool = False, integer: bool = False, label: str = "") -> Any:
    """A finite number (int or float, never a boolean), optionally bounded or whole."""
    if value is None and optional:
        return None
    if type(value) is float and minimum is None and not positive and not integer and math.isfinite(value):
        return value  # the common case, quickly: a history holds hundreds of thousands of samples
    prefix = f"{where}: {label}{show(value)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{prefix} is not a number")
    if positive:
        ok, words = finite(value) and value > 0, "not a positive finite number"
    elif minimum is not None:
        ok = finite(value) and value >= minimum
        words = "negative or not finite" if minimum == 0 else f"below {minimum} or not finite"
    else:
        ok, words = finite(value), "not finite"
    if not ok:
        raise InvalidInput(f"{prefix} is {words}")
    if integer and not float(value).is_integer():
        raise InvalidInput(f"{prefix} is not a whole number")
    return int(value) if integer else value


def numbers(values: Any, where: str, *, nonempty: bool = True, minimum: float | None = None,
            label: str = "") -> list[float]:
    """A list of finite numbers, as floats."""
    items = lst(values, where, nonempty=nonempty)
    return [float(number(v, where, minimum=minimum, label=label)) for v in items]
