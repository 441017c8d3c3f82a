"""How results reach the screen: `-o table` (default), `wide`, `json` and `yaml`.

JSON and YAML are the proto's JSON mapping with the proto field names (snake_case, as in the .proto files and
in grpcurl's `-d` requests), keys in declaration order, zero values included so that a script can rely on a
key being there (fields with presence, such as timestamps and the optional CPU and memory readings, appear
only when set). Enums are their full names (WORKER_STATUS_RUNNING), timestamps RFC 3339. A command that returns
several things prints one document ({"workers": [...]}), never a stream of them; only `workers watch -o json`
prints one document per line, as things happen.

Tables are for people: columns that do not fit the terminal are dropped (least useful first), colour is used
only on a terminal (and never with NO_COLOR), and piped tables carry no trailing blanks."""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from cmlmon_cli.formatting import ColumnFit, fit_columns


class Format(enum.StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


def to_dict(message: Message) -> dict[str, Any]:
    """The proto JSON mapping, keys in the order the .proto declares the fields (MessageToDict puts the set
    fields before the defaulted ones, so the order would change with the values)."""
    doc = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _ordered(message.DESCRIPTOR, doc)


def _ordered(descriptor: Any, doc: dict[str, Any]) -> dict[str, Any]:
    if descriptor.full_name.startswith("google.protobuf."):
        return doc
    out: dict[str, Any] = {}
    for f in descriptor.fields:
        if f.name not in doc:
            continue
        value = doc[f.name]
        nested = f.message_type
        if nested is not None and not nested.GetOptions().map_entry and isinstance(value, (dict, list)):
            value = ([_ordered(nested, v) for v in value] if isinstance(value, list) else _ordered(nested, value))
        out[f.name] = value
    return out


def console(stderr: bool = False) -> Console:
    """Colour only on a terminal; a pipe gets plain text as wide as its lines need (no wrapping at 80)."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    width = None if tty or os.environ.get("COLUMNS") else 10_000
    return Console(file=stream, highlight=False, soft_wrap=not tty, width=width, emoji=False)


def emit_document(doc: Any, fmt: Format) -> None:
    """One JSON or YAML document on stdout."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    sys.stdout.flush()


def json_line(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Column:
    """A table column: its header, how a row renders in it (text, or rich Text for colour), how much it matters
    (the lowest priority drops out first on a narrow terminal) and whether only `-o wide` shows it."""

    header: str
    cell: Callable[[Any], str | Text]
    priority: int = 5
    wide_only: bool = False
    justify: str = "left"


def build_table(columns: Sequence[Column], rows: Sequence[Any], fmt: Format, width: int | None) -> Table:
    """A borderless kubectl-like table of rows; width None: no limit (a pipe)."""
    shown = [c for c in columns if fmt is Format.wide or not c.wide_only]
    # Text, not str: a name like "[red]x" is data, not rich markup
    cells = [[_text(c.cell(row)) for c in shown] for row in rows]
    if width is not None:
        fits = [ColumnFit(max([len(c.header), *(r[i].cell_len for r in cells)]), c.priority)
                for i, c in enumerate(shown)]
        keep = fit_columns(fits, width)
        shown = [shown[i] for i in keep]
        cells = [[r[i] for i in keep] for r in cells]
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0), header_style="bold")
    for c in shown:
        table.add_column(c.header, no_wrap=True, overflow="ellipsis", justify=c.justify)  # type: ignore[arg-type]
    for r in cells:
        table.add_row(*r)
    return table


def _text(cell: str | Text) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def print_table(columns: Sequence[Column], rows: Sequence[Any], fmt: Format, empty: str = "") -> None:
    out = console()
    if not rows:
        if empty:
            note(empty)
        return
    table = build_table(columns, rows, fmt, out.width if out.is_terminal or os.environ.get("COLUMNS") else None)
    print_renderable(out, table)


def print_renderable(out: Console, renderable: RenderableType) -> None:
    """On a terminal as rich draws it; piped, with the padding rich adds at the end of each line removed."""
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_messages(key: str, messages: Sequence[Message], columns: Sequence[Column], fmt: Format,
                   empty: str = "") -> None:
    """A list result: a table, or one document {key: [...]}."""
    if fmt in (Format.json, Format.yaml):
        emit_document({key: [to_dict(m) for m in messages]}, fmt)
    else:
        print_table(columns, messages, fmt, empty)


def print_message(message: Message, columns: Sequence[Column], fmt: Format) -> None:
    """A single result: a one-row table, or the message as one document."""
    if fmt in (Format.json, Format.yaml):
        emit_document(to_dict(message), fmt)
    else:
        print_table(columns, [message], fmt)


def note(text: str) -> None:
    """A remark for the person at the terminal, on stderr, so stdout stays the result."""
    console(stderr=True).print(text, markup=False)
