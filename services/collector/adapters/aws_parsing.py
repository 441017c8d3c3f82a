"""The two answers the collector reads by the hundred every interval, GetMetricData and DescribeInstanceStatus,
parsed by a walk compiled once per output shape instead of botocore's shape-by-shape interpretation.

botocore parses an XML answer by interpreting its model for every node: per structure it maps every child's tag
through a regular expression, then looks up each member's handler by name. A 500-query GetMetricData answer took
12.5 ms of CPU that way (the XML itself 1.8 ms of it), and parsing was a third of a replica's CPU at 100,000
workers. Here the same model is turned once into nested closures (tag -> member name and parser), which build
the same dicts, lists, strings, numbers and timestamps botocore would (pinned by a test against botocore's own
parser on moto's answers). Only the output shapes in FAST_SHAPES take this path, and only while their models use
nothing but structures, non-flattened lists and scalars; everything else, and every error answer, is botocore's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from xml.etree.ElementTree import Element

from aiobotocore.parsers import AioEC2QueryParser, AioQueryParser, AioResponseParserFactory
from botocore.model import Shape

FAST_SHAPES = frozenset({"GetMetricDataOutput", "DescribeInstanceStatusResult"})

Parse = Callable[[Element], Any]


class Unsupported(Exception):
    """The shape uses a feature the compiled walk does not cover: botocore parses it."""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(node: Element) -> str:
    return node.text or ""


def _boolean(node: Element) -> bool:
    return node.text == "true"


def _integer(node: Element) -> int:
    return int(_text(node))


def _float(node: Element) -> float:
    return float(_text(node))


_SCALARS: dict[str, Parse] = {"string": _text, "boolean": _boolean, "integer": _integer, "long": _integer,
                              "double": _float, "float": _float}


def compile_shape(shape: Shape, timestamp: Callable[[str], Any], depth: int = 0) -> Parse:
    """A function from an XML node to what botocore's query and EC2 parsers make of it for this shape."""
    if depth > 10:
        raise Unsupported(f"{shape.name}: nested too deep")
    kind = shape.type_name
    if kind == "structure":
        return _structure(shape, timestamp, depth)
    if kind == "list":
        if shape.serialization.get("flattened"):
            raise Unsupported(f"{shape.name}: flattened list")
        item = compile_shape(shape.member, timestamp, depth + 1)  # type: ignore[attr-defined]
        return lambda node: list(map(item, node))
    if kind == "timestamp":
        return lambda node: timestamp(_text(node))
    if kind in _SCALARS:
        return _SCALARS[kind]
    raise Unsupported(f"{shape.name}: {kind}")


def _structure(shape: Shape, timestamp: Callable[[str], Any], depth: int) -> Parse:
    if shape.metadata.get("exception") or getattr(shape, "is_tagged_union", False):
        raise Unsupported(f"{shape.name}: exception or union")
    members: dict[str, tuple[str, Parse]] = {}
    for name, member in shape.members.items():  # type: ignore[attr-defined]
        s = member.serialization
        if s.get("location") or s.get("xmlAttribute") or s.get("eventheader") or s.get("flattened"):
            raise Unsupported(f"{shape.name}.{name}: {s}")
        members[s.get("name", name)] = (name, compile_shape(member, timestamp, depth + 1))

    by_tag: dict[str, tuple[str, Parse] | None] = {}  # a child's whole tag (namespace and all): what it is

    def structure(node: Element) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for child in node:
            tag = child.tag
            try:
                found = by_tag[tag]
            except KeyError:
                found = by_tag[tag] = members.get(_local(tag))
            if found is not None:
                name, parse = found
                # a string member, the commonest, is read here rather than by a call of its own
                out[name] = (child.text or "") if parse is _text else parse(child)
        return out
    return structure


class _CompiledWalk:
    """`_do_parse` for the shapes in FAST_SHAPES; the rest of the parser is botocore's."""

    _plans: dict[str, Parse | None]
    _timestamp_parser: Callable[[str], Any]

    def _plan(self, shape: Shape | None) -> Parse | None:
        if shape is None or shape.name not in FAST_SHAPES:
            return None
        if shape.name not in self._plans:
            try:
                self._plans[shape.name] = compile_shape(shape, self._timestamp_parser)
            except Unsupported:
                self._plans[shape.name] = None
        return self._plans[shape.name]

    def _do_parse(self, response: dict[str, Any], shape: Shape | None) -> Any:
        plan = self._plan(shape)
        if plan is None or shape is None:
            return super()._do_parse(response, shape)  # type: ignore[misc]
        root = self._parse_xml_string_to_dom(response["body"])  # type: ignore[attr-defined]
        start = root
        if "resultWrapper" in shape.serialization:
            start = self._find_result_wrapped_shape(shape.serialization["resultWrapper"], root)  # type: ignore[attr-defined]
        parsed = plan(start)
        self._inject_response_metadata(root, parsed)  # type: ignore[attr-defined]
        return parsed


class FastQueryParser(_CompiledWalk, AioQueryParser):  # type: ignore[misc]
    def __init__(self, plans: dict[str, Parse | None], **defaults: Any) -> None:
        super().__init__(**defaults)
        self._plans = plans


class FastEC2QueryParser(_CompiledWalk, AioEC2QueryParser):  # type: ignore[misc]
    def __init__(self, plans: dict[str, Parse | None], **defaults: Any) -> None:
        super().__init__(**defaults)
        self._plans = plans


class CollectorParserFactory(AioResponseParserFactory):  # type: ignore[misc]
    """aiobotocore's parser factory, with the compiled walk for the query (CloudWatch) and EC2 protocols."""

    def __init__(self) -> None:
        super().__init__()
        self._plans: dict[str, Parse | None] = {}

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "query":
            return FastQueryParser(self._plans, **self._defaults)
        if protocol_name == "ec2":
            return FastEC2QueryParser(self._plans, **self._defaults)
        return super().create_parser(protocol_name)
