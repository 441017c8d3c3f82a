"""What every command shares: the connection made from the root's flags, and the `-o` option."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer

from cmlmon_cli.client import Clients
from cmlmon_cli.output import Format
from cmlmon_cli.settings import load_settings

OutputOption = Annotated[Format, typer.Option(
    "--output", "-o", help="table (default), wide (more columns), json or yaml (the proto JSON, one document).",
    case_sensitive=False)]


@dataclass
class Connection:
    """The connection flags of this invocation; the clients are made when a command first needs them, so
    that `--help` and usage errors never touch the settings or the network."""

    flags: dict[str, object]
    _clients: Clients | None = field(default=None, repr=False)

    def clients(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(load_settings(**self.flags))
        return self._clients

    def close(self) -> None:
        if self._clients is not None:
            self._clients.close()


def clients(ctx: typer.Context) -> Clients:
    connection = ctx.find_root().obj
    assert isinstance(connection, Connection)
    return connection.clients()
