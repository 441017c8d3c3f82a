"""Query-protocol requests (EC2, CloudWatch) of the collector's AWS clients built cheaply, inside botocore's own
pipeline: two of its events, so endpoints, signing, retries and error handling stay botocore's.

- `provide-client-params` (GetMetricData): botocore serializes a request by interpreting its model for every
  value (a method looked up by name, a prefix string built, per field): 13 ms of CPU for a 500-query call, 4,000
  fields. The member listed in FAST_MEMBERS is flattened instead by a function compiled once from the same model,
  following the query serializer's rules and straight into encoded `key=value` fields (pinned by a test against
  botocore's serializer and preparer), and handed on in the request's context; botocore serializes the rest. A
  value the model does not expect leaves the whole member to botocore.
- `before-call`: the form fields become the encoded body, once. botocore's preparer urlencodes the dict every time
  the request is looked at, and SigV4 looks at it (to hash the payload) before it is prepared to be sent, quoting
  every key and value afresh: ~22 ms of the ~50 ms of CPU a 500-query GetMetricData cost. Keys and most values
  repeat from call to call (`MetricDataQueries.member.7.MetricStat.Period`, `AWS/EC2`), so their quoted forms are
  cached."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote_plus

from botocore.model import OperationModel, Shape
from botocore.session import Session

FAST_MEMBERS = {"GetMetricData": "MetricDataQueries"}  # operation -> the member flattened by a compiled function
FIELDS = "cmlmon_form_fields"  # the request context's key for them

Flatten = Callable[[list[str], Any, str], None]


class Unsupported(Exception):
    """The member's model uses something the compiled flattening does not cover: botocore serializes it."""


@functools.lru_cache(maxsize=65536)
def _form_quoted(text: str) -> str:
    return quote_plus(text)


def encode_form(fields: Mapping[str, str | int | float]) -> bytes:
    """Form fields encoded as botocore's preparer encodes them (urlencode with quote_plus), byte for byte."""
    return "&".join([f"{_form_quoted(k)}={_form_quoted(v if v.__class__ is str else _scalar(v))}"
                     for k, v in fields.items()]).encode()


def _scalar(value: object) -> str:
    if isinstance(value, int | float):  # what botocore's serializers leave unconverted (integers, doubles)
        return str(value)
    raise TypeError(f"not a form value: {type(value).__name__}")


def _safe_name(name: str) -> str:
    """A segment of a form key; keys built of segments quote_plus leaves alone are sent as they are built."""
    if quote_plus(name) != name:
        raise Unsupported(f"{name!r} would be quoted")
    return name


def compile_member(shape: Shape, depth: int = 0) -> Flatten:
    """A function appending a value of this shape to a list of encoded form fields (`key=value`) under a key
    prefix, as QuerySerializer serializes it and botocore's preparer encodes it."""
    if depth > 10:
        raise Unsupported(f"{shape.name}: nested too deep")
    kind = shape.type_name
    if kind == "structure":
        # A string member, the commonest, is appended here rather than by a call of its own (a 500-query
        # GetMetricData request has 2,500 of them).
        members = {name: (_safe_name(m.serialization.get("name", name)), compile_member(m, depth + 1),
                          m.type_name == "string")
                   for name, m in shape.members.items()}  # type: ignore[attr-defined]

        def structure(out: list[str], value: Any, prefix: str) -> None:
            for key, item in value.items():
                name, flatten, string = members[key]
                if string and item.__class__ is str:
                    out.append(f"{prefix}.{name}={_form_quoted(item)}" if prefix else f"{name}={_form_quoted(item)}")
                else:
                    flatten(out, item, f"{prefix}.{name}" if prefix else name)
        return structure
    if kind == "list":
        member: Shape = shape.member  # type: ignore[attr-defined]
        if shape.serialization.get("flattened"):
            raise Unsupported(f"{shape.name}: flattened list")
        list_name = _safe_name(member.serialization.get("name", "member"))
        flatten_item = compile_member(member, depth + 1)

        def listed(out: list[str], value: Any, prefix: str) -> None:
            if not value:
                out.append(f"{prefix}=")  # the query protocol sends empty lists
                return
            for index, item in enumerate(value, 1):
                flatten_item(out, item, f"{prefix}.{list_name}.{index}")
        return listed
    if kind in ("string", "integer", "long"):
        def scalar(out: list[str], value: Any, prefix: str) -> None:
            out.append(f"{prefix}={_form_quoted(value if value.__class__ is str else _scalar(value))}")
        return scalar
    if kind == "boolean":
        def boolean(out: list[str], value: Any, prefix: str) -> None:
            out.append(f"{prefix}=true" if value else f"{prefix}=false")
        return boolean
    raise Unsupported(f"{shape.name}: {kind}")


class FormRequests:
    """The two event handlers, with the compiled flattening of each FAST_MEMBERS member (compiled on first use)."""

    def __init__(self) -> None:
        self._plans: dict[tuple[str, str], Flatten | None] = {}

    def register(self, session: Session, *, validating: bool) -> None:
        """Handle the events of every client of session; a client validating its parameters would miss the
        member taken out, so with `validating` (the clients' Config.parameter_validation) botocore serializes it."""
        if not validating:
            for operation in FAST_MEMBERS:
                session.register(f"provide-client-params.cloudwatch.{operation}", self.take_member)
        for service in ("ec2", "cloudwatch"):
            session.register(f"before-call.{service}", self.encode_body)

    def take_member(self, params: dict[str, Any], model: OperationModel, context: dict[str, Any],
                    **_: Any) -> dict[str, Any] | None:
        """provide-client-params: flatten the member into the context, hand botocore the other parameters."""
        member = FAST_MEMBERS.get(model.name)
        if member is None or member not in params:
            return None
        flatten = self._plan(model, member)
        if flatten is None:
            return None
        shape = model.input_shape.members[member]
        fields: list[str] = []
        try:
            flatten(fields, params[member], _safe_name(shape.serialization.get("name", member)))
        except (TypeError, AttributeError, KeyError, Unsupported):  # not what the model says: botocore's to judge
            return None
        context[FIELDS] = "&".join(fields)
        return {k: v for k, v in params.items() if k != member}

    def encode_body(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """before-call: add the flattened member after Action and Version (where botocore puts a first
        parameter), and encode the body once. A body holding anything but strings and numbers is botocore's to
        encode."""
        body = params.get("body")
        if not isinstance(body, dict):
            return
        fields: str | None = context.pop(FIELDS, None)
        if fields is None:
            with contextlib.suppress(TypeError):
                params["body"] = encode_form(body)
            return
        head = {k: body.pop(k) for k in ("Action", "Version") if k in body}
        try:
            parts = [encode_form(head), fields.encode(), encode_form(body)]
        except TypeError:  # hand botocore every field to encode, the flattened ones decoded again
            params["body"] = {**head, **dict(parse_qsl(fields, keep_blank_values=True)), **body}
            return
        params["body"] = b"&".join(part for part in parts if part)

    def _plan(self, model: OperationModel, member: str) -> Flatten | None:
        key = (model.service_model.service_name, model.name)
        if key not in self._plans:
            try:
                self._plans[key] = compile_member(model.input_shape.members[member])
            except Unsupported:
                self._plans[key] = None
        return self._plans[key]
