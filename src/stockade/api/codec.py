"""EC2 Query protocol codec driven entirely by botocore's EC2 service model (2016-11-15).

Requests: the flat ``Name.1.Sub=value`` parameters are split into a trie once, then walked with
per-shape decoder tables (wire name -> snake_case key, converter) built lazily and cached.
Responses: cached per-shape encoder tables emit EC2 XML in model member order by string joins.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import botocore.session
from botocore import xform_name
from botocore.model import OperationModel, ServiceModel, Shape

from stockade.errors import ApiError

__all__ = [
    "API_VERSION",
    "XMLNS",
    "decode_request",
    "encode_error",
    "encode_response",
    "operation_names",
    "snake",
]

API_VERSION: str = "2016-11-15"
XMLNS: str = f"http://ec2.amazonaws.com/doc/{API_VERSION}/"

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_MAX_LIST_INDEX = 10000
_MAX_LIST_ITEMS = 10000
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MAX_VALUE_IN_MESSAGE = 256

_INT_RE = re.compile(r"[+-]?[0-9]{1,25}")
_FLOAT_RE = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?Infinity|NaN|[+-]?inf|nan"
)
_INDEX_RE = re.compile(r"[1-9][0-9]{0,5}")

# Characters that need work before they can go into XML text: markup, CR (which XML parsers
# would normalise away unless written as a reference), and characters XML 1.0 cannot carry at
# all (C0 controls, lone surrogates, U+FFFE/U+FFFF), which are replaced by U+FFFD.
_NEEDS_ESCAPE = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# --------------------------------------------------------------------------------------------
# Model access


@functools.cache
def _model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ec2", api_version=API_VERSION)


@functools.cache
def operation_names() -> frozenset[str]:
    """Every operation name of the EC2 model (loading the model on first call)."""
    return frozenset(_model().operation_names)


@functools.cache
def _operation(action: str) -> OperationModel:
    # Only ever called with a name from operation_names(), so the cache stays bounded.
    return _model().operation_model(action)


@functools.cache
def snake(name: str) -> str:
    """Model member name -> snake_case key (botocore's ``xform_name``): CidrIpv6 -> cidr_ipv6."""
    return xform_name(name)


def _esc(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("\r", "&#13;")
    return _NOT_XML_CHAR.sub("\ufffd", text)


# --------------------------------------------------------------------------------------------
# Request decoding


class _Node:
    """One dotted component of the request parameters: a value, sub-keys, or (wrongly) both."""

    __slots__ = ("children", "path", "value")

    def __init__(self, path: str) -> None:
        self.path = path
        self.value: str | None = None
        self.children: dict[str, _Node] | None = None


def _trie(params: Mapping[str, str]) -> _Node:
    root = _Node("")
    for key, value in params.items():
        node = root
        for part in key.split("."):
            children = node.children
            if children is None:
                children = node.children = {}
            child = children.get(part)
            if child is None:
                child = children[part] = _Node(f"{node.path}.{part}" if node.path else part)
            node = child
        node.value = value
    return root


def _first_leaf(node: _Node) -> _Node:
    """A parameter actually sent at or below ``node`` (to name it in error messages)."""
    while node.value is None and node.children:
        node = next(iter(node.children.values()))
    return node


def _invalid(value: str | None, key: str, reason: str) -> ApiError:
    shown = "" if value is None else value
    if len(shown) > _MAX_VALUE_IN_MESSAGE:
        shown = shown[:_MAX_VALUE_IN_MESSAGE] + "..."
    return ApiError(
        "InvalidParameterValue", f"Value ({shown}) for parameter {key} is invalid. {reason}"
    )


def _reject_subkeys(node: _Node) -> ApiError:
    leaf = _first_leaf(next(iter(node.children.values()))) if node.children else node
    return _invalid(leaf.value, leaf.path, f"Parameter {node.path} takes no sub-parameters.")


_Decoder = Callable[[_Node], Any]
_Converter = Callable[[str], Any]


def _dec_string(node: _Node) -> Any:
    if node.children is not None:
        raise _reject_subkeys(node)
    value = node.value
    bad = _NOT_XML_CHAR.search(value)  # type: ignore[arg-type]  # leaves carry a value
    if bad is not None:
        # NUL and the other characters XML cannot carry: EC2 could never hand them back,
        # and PostgreSQL refuses to store a NUL
        raise _invalid(
            value,
            node.path,
            f"The character U+{ord(bad.group()):04X} is not allowed in a parameter value.",
        )
    return value


def _conv_integer(text: str) -> int:
    if _INT_RE.fullmatch(text) is None:
        raise ValueError("Expected an integer.")
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("Expected an integer within the signed 64-bit range.")
    return value


def _conv_boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError("Expected true or false.")


def _conv_float(text: str) -> float:
    if _FLOAT_RE.fullmatch(text) is None:
        raise ValueError("Expected a number.")
    return float(text)


def _conv_timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("Expected an ISO 8601 timestamp.") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _conv_blob(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Expected base64-encoded data.") from None


def _scalar_decoder(convert: _Converter) -> _Decoder:
    def decode(node: _Node) -> Any:
        if node.children is not None:
            raise _reject_subkeys(node)
        value: str = node.value  # type: ignore[assignment]  # leaves always carry a value
        try:
            return convert(value)
        except ValueError as exc:
            raise _invalid(value, node.path, str(exc)) from None

    return decode


_SCALAR_DECODERS: dict[str, _Decoder] = {
    "string": _dec_string,
    "character": _dec_string,
    "integer": _scalar_decoder(_conv_integer),
    "long": _scalar_decoder(_conv_integer),
    "byte": _scalar_decoder(_conv_integer),
    "short": _scalar_decoder(_conv_integer),
    "boolean": _scalar_decoder(_conv_boolean),
    "float": _scalar_decoder(_conv_float),
    "double": _scalar_decoder(_conv_float),
    "timestamp": _scalar_decoder(_conv_timestamp),
    "blob": _scalar_decoder(_conv_blob),
}


class _InStruct:
    """Decoder table of one structure shape: wire name -> (snake name, decoder)."""

    __slots__ = ("members", "required")

    def __init__(self, members: dict[str, tuple[str, _Decoder]], required: tuple[str, ...]) -> None:
        self.members = members
        self.required = required


def _wire_name(member: Shape, name: str) -> str:
    # Exactly botocore's EC2Serializer._get_serialized_name.
    serialization = member.serialization
    if "queryName" in serialization:
        return serialization["queryName"]
    location_name = serialization.get("name")
    if location_name:
        return location_name[0].upper() + location_name[1:]
    return name


@functools.cache
def _in_struct(shape_name: str) -> _InStruct:
    shape = _model().shape_for(shape_name)
    members: dict[str, tuple[str, _Decoder]] = {}
    wire_of: dict[str, str] = {}
    for name, member in shape.members.items():
        wire = _wire_name(member, name)
        if wire in members:  # pragma: no cover - the model has no such clash
            raise RuntimeError(f"{shape_name}: two members serialize as {wire}")
        members[wire] = (snake(name), _in_decoder(member))
        wire_of[name] = wire
    required = tuple(wire_of[name] for name in shape.required_members)
    return _InStruct(members, required)


def _decode_struct(table: _InStruct, node: _Node) -> dict[str, Any]:
    if node.value is not None:
        raise _invalid(node.value, node.path, "Expected sub-parameters, not a value.")
    out: dict[str, Any] = {}
    children = node.children
    if children:
        members = table.members
        for part, child in children.items():
            entry = members.get(part)
            if entry is None:
                key = _first_leaf(child).path
                raise ApiError("UnknownParameter", f"The parameter {key} is not recognized")
            out[entry[0]] = entry[1](child)
    for wire in table.required:
        if not children or wire not in children:
            name = f"{node.path}.{wire}" if node.path else wire
            raise ApiError("MissingParameter", f"The request must contain the parameter {name}")
    return out


@functools.cache
def _struct_decoder(shape_name: str) -> _Decoder:
    table: _InStruct | None = None

    def decode(node: _Node) -> dict[str, Any]:
        nonlocal table
        if table is None:  # resolved on first use: structures may be recursive
            table = _in_struct(shape_name)
        return _decode_struct(table, node)

    return decode


def _list_decoder(member_decoder: _Decoder) -> _Decoder:
    def decode(node: _Node) -> list[Any]:
        children = node.children
        if node.value is not None:
            if children is None and node.value == "":
                return []  # the generic query protocol's spelling of an empty list
            raise _invalid(node.value, node.path, "Expected a list (Name.1, Name.2, ...).")
        assert children is not None
        if len(children) > _MAX_LIST_ITEMS:
            leaf = _first_leaf(node)
            raise _invalid(leaf.value, leaf.path, f"Lists take at most {_MAX_LIST_ITEMS} items.")
        indexed: list[tuple[int, _Node]] = []
        for index, child in children.items():
            if _INDEX_RE.fullmatch(index) is None or int(index) > _MAX_LIST_INDEX:
                leaf = _first_leaf(child)
                raise _invalid(
                    leaf.value,
                    leaf.path,
                    f"List index {index} is not an integer between 1 and {_MAX_LIST_INDEX}.",
                )
            indexed.append((int(index), child))
        indexed.sort(key=itemgetter(0))
        return [member_decoder(child) for _, child in indexed]

    return decode


def _in_decoder(shape: Shape) -> _Decoder:
    kind = shape.type_name
    if kind == "structure":
        return _struct_decoder(shape.name)
    if kind == "list":
        return _list_decoder_for(shape.name)
    decoder = _SCALAR_DECODERS.get(kind)
    if decoder is None:  # pragma: no cover - maps do not occur in EC2 inputs
        raise NotImplementedError(f"EC2 input shape {shape.name} has unsupported type {kind}")
    return decoder


@functools.cache
def _list_decoder_for(shape_name: str) -> _Decoder:
    return _list_decoder(_in_decoder(_model().shape_for(shape_name).member))


@functools.cache
def _input_decoder(action: str) -> _Decoder | None:
    shape = _operation(action).input_shape
    return None if shape is None else _struct_decoder(shape.name)


def decode_request(action: str, params: dict[str, str]) -> dict:
    """Parse an EC2 Query request (``Action``/``Version``/SigV4 parameters already removed).

    Returns the input members present on the wire, keyed by snake_case member name. Raises
    :class:`ApiError` (InvalidAction, UnknownParameter, InvalidParameterValue,
    MissingParameter) and nothing else.
    """
    if action not in operation_names():
        raise ApiError("InvalidAction", f"The action {action} is not valid for this web service.")
    decoder = _input_decoder(action)
    root = _trie(params)
    if decoder is None:  # pragma: no cover - every EC2 operation has an input shape
        if root.children:
            key = _first_leaf(root).path
            raise ApiError("UnknownParameter", f"The parameter {key} is not recognized")
        return {}
    return decoder(root)


# --------------------------------------------------------------------------------------------
# Response encoding


class _OutputTypeError(TypeError):
    """A value of the wrong Python type for its shape; ``path`` is filled in on the way up."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def __str__(self) -> str:
        return f"{''.join(reversed(self.path)).lstrip('.')}: {self.message}"


_Encoder = Callable[[list[str], Any], None]


def _wrong_type(expected: str, value: Any) -> _OutputTypeError:
    return _OutputTypeError(f"expected {expected}, got {type(value).__name__} {value!r:.80}")


def _enc_string(parts: list[str], value: Any) -> None:
    if not isinstance(value, str):
        raise _wrong_type("str", value)
    parts.append(_esc(value))


def _enc_boolean(parts: list[str], value: Any) -> None:
    if value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    else:
        raise _wrong_type("bool", value)


def _enc_integer(parts: list[str], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type("int", value)
    parts.append(str(value))


def _enc_float(parts: list[str], value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong_type("float", value)
    if isinstance(value, int):
        parts.append(str(value))
    elif math.isnan(value):
        parts.append("NaN")
    elif math.isinf(value):
        parts.append("Infinity" if value > 0 else "-Infinity")
    else:
        parts.append(repr(value))


def _format_timestamp(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}."
        f"{value.microsecond // 1000:03d}Z"
    )


def _enc_timestamp(parts: list[str], value: Any) -> None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _wrong_type("an ISO 8601 timestamp", value) from None
    elif not isinstance(value, datetime):
        raise _wrong_type("datetime", value)
    parts.append(_format_timestamp(value))


def _enc_blob(parts: list[str], value: Any) -> None:
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, bytes | bytearray | memoryview):
        raise _wrong_type("bytes", value)
    parts.append(base64.b64encode(value).decode("ascii"))


_SCALAR_ENCODERS: dict[str, _Encoder] = {
    "string": _enc_string,
    "character": _enc_string,
    "integer": _enc_integer,
    "long": _enc_integer,
    "byte": _enc_integer,
    "short": _enc_integer,
    "boolean": _enc_boolean,
    "float": _enc_float,
    "double": _enc_float,
    "timestamp": _enc_timestamp,
    "blob": _enc_blob,
}


class _OutMember:
    __slots__ = ("close", "empty", "encode", "name", "open")

    def __init__(self, name: str, element: str, encode: _Encoder, is_list: bool) -> None:
        self.name = name
        self.open = f"<{element}>"
        self.close = f"</{element}>"
        self.empty = f"<{element}/>" if is_list else None
        self.encode = encode


class _OutStruct:
    """Encoder table of one structure shape: snake name -> position and element/encoder."""

    __slots__ = ("members", "order", "shape_name")

    def __init__(self, shape_name: str, members: dict[str, _OutMember]) -> None:
        self.shape_name = shape_name
        self.members = members
        self.order = {key: position for position, key in enumerate(members)}


@functools.cache
def _out_struct(shape_name: str) -> _OutStruct:
    shape = _model().shape_for(shape_name)
    members: dict[str, _OutMember] = {}
    for name, member in shape.members.items():
        if member.type_name == "list" and member.serialization.get("flattened"):
            raise NotImplementedError(f"{shape_name}.{name}: flattened lists")  # pragma: no cover
        element = member.serialization.get("name") or name
        members[snake(name)] = _OutMember(
            name, element, _out_encoder(member), member.type_name == "list"
        )
    return _OutStruct(shape_name, members)


def _encode_struct(table: _OutStruct, value: Any, parts: list[str]) -> None:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise _wrong_type(f"a mapping for {table.shape_name}", value)
    order = table.order
    if not order.keys() >= value.keys():
        unknown = sorted(str(key) for key in value if key not in order)
        raise KeyError(
            f"{table.shape_name} has no member {', '.join(unknown)} (members: {', '.join(order)})"
        )
    keys = sorted(value, key=order.__getitem__) if len(value) > 1 else value
    members = table.members
    for key in keys:
        item = value[key]
        if item is None:
            continue
        member = members[key]
        if member.empty is not None and not item:
            parts.append(member.empty)
            continue
        parts.append(member.open)
        try:
            member.encode(parts, item)
        except _OutputTypeError as exc:
            exc.path.append(f".{member.name}")
            raise
        parts.append(member.close)


@functools.cache
def _struct_encoder(shape_name: str) -> _Encoder:
    table: _OutStruct | None = None

    def encode(parts: list[str], value: Any) -> None:
        nonlocal table
        if table is None:  # resolved on first use: structures may be recursive
            table = _out_struct(shape_name)
        _encode_struct(table, value, parts)

    return encode


@functools.cache
def _list_encoder(shape_name: str) -> _Encoder:
    member = _model().shape_for(shape_name).member
    item = member.serialization.get("name") or "item"
    item_open, item_close = f"<{item}>", f"</{item}>"
    encode_item = _out_encoder(member)

    def encode(parts: list[str], value: Any) -> None:
        if not isinstance(value, list | tuple):
            raise _wrong_type("a list", value)
        for index, element in enumerate(value):
            parts.append(item_open)
            try:
                if element is None:
                    raise _wrong_type("a list element", element)
                encode_item(parts, element)
            except _OutputTypeError as exc:
                exc.path.append(f"[{index}]")
                raise
            parts.append(item_close)

    return encode


def _out_encoder(shape: Shape) -> _Encoder:
    kind = shape.type_name
    if kind == "structure":
        return _struct_encoder(shape.name)
    if kind == "list":
        return _list_encoder(shape.name)
    encoder = _SCALAR_ENCODERS.get(kind)
    if encoder is None:  # pragma: no cover - maps do not occur in EC2 outputs
        raise NotImplementedError(f"EC2 output shape {shape.name} has unsupported type {kind}")
    return encoder


# Generated encoders: the same output as the table-driven ones above, as straight-line Python
# per shape (no sorting, no per-member dispatch). They check less on the way: on anything
# unusual (a wrong type, an unknown key, a Mapping that is not a dict) they give up and
# encode_response starts over with the checked encoders, which then raise the precise error.


class _GiveUp(Exception):
    pass


_FAST: dict[str, _Encoder] = {}
_SCALAR_TYPES = {
    "string": "str",
    "character": "str",
    "integer": "int",
    "long": "int",
    "byte": "int",
    "short": "int",
    "boolean": "bool",
}


def _fast_value(shape: Shape, var: str, open_: str, close: str, ns: dict[str, Any]) -> list[str]:
    """Source lines that append ``open_``, the encoded ``var`` and ``close`` to ``parts``."""
    kind = shape.type_name
    scalar = _SCALAR_TYPES.get(kind)
    if scalar == "str":
        return [
            f"if not isinstance({var}, str): raise _GiveUp",
            f"append({open_!r} + ({var} if _search({var}) is None else _esc({var})) + {close!r})",
        ]
    if scalar == "int":
        return [
            f"if {var}.__class__ is not int: raise _GiveUp",
            f"append({open_!r} + str({var}) + {close!r})",
        ]
    if scalar == "bool":
        return [
            f"if {var} is True: append({open_ + 'true' + close!r})",
            f"elif {var} is False: append({open_ + 'false' + close!r})",
            "else: raise _GiveUp",
        ]
    if kind == "structure":
        name = f"s_{len(ns)}"
        ns[name] = _LazyFast(_fast_struct, shape.name, ns, name)
    elif kind == "list":
        name = f"l_{len(ns)}"
        ns[name] = _LazyFast(_fast_list, shape.name, ns, name)
    else:
        name = f"e_{len(ns)}"
        ns[name] = _out_encoder(shape)
    lines = [f"{name}(parts, {var})"]
    if open_:
        lines.insert(0, f"append({open_!r})")
    if close:
        lines.append(f"append({close!r})")
    return lines


class _LazyFast:
    """A generated encoder built on first call (shapes may be recursive), which then puts
    the real one in its place in the calling encoder's namespace."""

    __slots__ = ("build", "name", "ns", "shape_name")

    def __init__(
        self, build: Callable[[str], _Encoder], shape_name: str, ns: dict[str, Any], name: str
    ) -> None:
        self.build, self.shape_name, self.ns, self.name = build, shape_name, ns, name

    def __call__(self, parts: list[str], value: Any) -> None:
        fn = self.ns[self.name] = self.build(self.shape_name)
        fn(parts, value)


def _compile(source: list[str], ns: dict[str, Any]) -> _Encoder:
    ns.update(_GiveUp=_GiveUp, _search=_NEEDS_ESCAPE.search, _esc=_esc)
    exec("\n".join(source), ns)  # noqa: S102 - source built above from the EC2 model
    return ns["enc"]


def _fast_struct(shape_name: str) -> _Encoder:
    fn = _FAST.get(shape_name)
    if fn is not None:
        return fn
    table = _out_struct(shape_name)
    shape = _model().shape_for(shape_name)
    ns: dict[str, Any] = {"KEYS": frozenset(table.order)}
    src = [
        "def enc(parts, value):",
        "    if value.__class__ is not dict or not value.keys() <= KEYS: raise _GiveUp",
        "    append = parts.append",
        "    get = value.get",
    ]
    for name, member_shape in shape.members.items():
        key = snake(name)
        member = table.members[key]
        src += [f"    v = get({key!r})", "    if v is not None:"]
        if member.empty is not None:
            src += ["        if not v:", f"            append({member.empty!r})", "        else:"]
            indent = "            "
        else:
            indent = "        "
        for line in _fast_value(member_shape, "v", member.open, member.close, ns):
            src.append(indent + line)
    fn = _FAST[shape_name] = _compile(src, ns)
    return fn


def _fast_list(shape_name: str) -> _Encoder:
    key = f"list:{shape_name}"
    fn = _FAST.get(key)
    if fn is not None:
        return fn
    member = _model().shape_for(shape_name).member
    item = member.serialization.get("name") or "item"
    ns: dict[str, Any] = {}
    src = [
        "def enc(parts, value):",
        "    if not isinstance(value, (list, tuple)): raise _GiveUp",
        "    append = parts.append",
        "    for v in value:",
        "        if v is None: raise _GiveUp",
    ]
    for line in _fast_value(member, "v", f"<{item}>", f"</{item}>", ns):
        src.append("        " + line)
    fn = _FAST[key] = _compile(src, ns)
    return fn


@functools.cache
def _response_frame(action: str) -> tuple[str, str, _OutStruct | None]:
    shape = _operation(action).output_shape
    table = _out_struct(shape.name) if shape is not None and shape.members else None
    head = f'{_XML_DECL}<{action}Response xmlns="{XMLNS}"><requestId>'
    return head, f"</{action}Response>", table


def encode_response(action: str, result: dict, request_id: str) -> bytes:
    """Serialize ``result`` (snake_case keys of the output shape) as EC2's response XML.

    A key that is not a member of its shape raises ``KeyError``; a value of the wrong Python
    type raises ``TypeError`` naming its path. Both are server bugs, never client errors.
    """
    if action not in operation_names():
        raise KeyError(f"{action} is not an EC2 operation")
    head, tail, table = _response_frame(action)
    parts = [head, _esc(request_id), "</requestId>"]
    if table is not None:
        try:
            _fast_struct(table.shape_name)(parts, result)
        except Exception:
            del parts[3:]
            _encode_struct(table, result, parts)
    elif result:
        raise KeyError(f"{action} has no output members, got {', '.join(map(str, result))}")
    parts.append(tail)
    return "".join(parts).encode("utf-8")


def encode_error(code: str, message: str, request_id: str) -> bytes:
    """EC2's error document: ``Response/Errors/Error/{Code,Message}`` and ``RequestID``."""
    return (
        f"{_XML_DECL}<Response><Errors><Error><Code>{_esc(code)}</Code>"
        f"<Message>{_esc(message)}</Message></Error></Errors>"
        f"<RequestID>{_esc(request_id)}</RequestID></Response>"
    ).encode()
