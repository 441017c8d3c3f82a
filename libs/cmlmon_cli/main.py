"""`cmlmon`: the operator's command line for the registry and the notifier.

Exit codes: 0 ok, 1 failure, 2 usage error (also a request the server refuses as INVALID_ARGUMENT), 3 not
found, 4 not allowed (UNAUTHENTICATED, PERMISSION_DENIED), 130 interrupted. Errors are one line on stderr."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from cmlmon_cli import alerts, status, workers
from cmlmon_cli.context import Connection
from cmlmon_cli.errors import FAILURE, CliError

app = typer.Typer(
    name="cmlmon",
    help="Run a fleet of CML workers: workers, alerts, silences and the health of the pipeline.",
    epilog="Examples:\n\n"
           "  cmlmon workers list\n\n"
           "  cmlmon --registry 10.0.0.5:50051 --token-file ~/.cmlmon/token workers list -o json\n\n"
           "  cmlmon status",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
app.add_typer(workers.app, name="workers")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(alerts.silences_app, name="silences")
app.command("status", epilog=status.EPILOG)(status.status)


@app.callback()
def root(
    ctx: typer.Context,
    registry: Annotated[str | None, typer.Option(
        help="Registry gRPC address host:port (env CMLMON_REGISTRY; default 127.0.0.1:50051, as `make run`).",
        show_default=False)] = None,
    notifier: Annotated[str | None, typer.Option(
        help="Notifier gRPC address host:port (env CMLMON_NOTIFIER; default 127.0.0.1:50052).",
        show_default=False)] = None,
    token: Annotated[str | None, typer.Option(
        help="Bearer token (env CMLMON_TOKEN). Prefer --token-file: a flag shows in the process list.",
        show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="File holding the bearer token (env CMLMON_TOKEN_FILE; default .run/token when it exists).",
        show_default=False)] = None,
    ca: Annotated[Path | None, typer.Option(
        help="CA certificate (PEM): connect with TLS trusting it (env CMLMON_CA); plaintext without it.",
        show_default=False)] = None,
    cert: Annotated[Path | None, typer.Option(
        help="Client certificate (PEM) for mutual TLS (env CMLMON_CERT).", show_default=False)] = None,
    key: Annotated[Path | None, typer.Option(
        help="Client private key (PEM) for mutual TLS (env CMLMON_KEY).", show_default=False)] = None,
    call_timeout: Annotated[float | None, typer.Option(
        help="Seconds one call may take (env CMLMON_CALL_TIMEOUT; default 30).", show_default=False)] = None,
) -> None:
    """Run a fleet of CML workers: workers, alerts, silences and the health of the pipeline."""
    connection = Connection({"registry": registry, "notifier": notifier, "token": token, "token_file": token_file,
                             "ca": ca, "cert": cert, "key": key, "call_timeout": call_timeout})
    ctx.obj = connection
    ctx.call_on_close(connection.close)


def fail(message: str, code: int) -> None:
    """The one line a failed command leaves on stderr."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def main() -> None:
    """The `cmlmon` console script."""
    try:
        app()
    except CliError as exc:
        fail(exc.message, exc.exit_code)
    except Exception as exc:  # a bug of ours: still one line, the traceback only when asked for
        if os.environ.get("CMLMON_DEBUG"):
            traceback.print_exc()
        fail(f"internal error: {type(exc).__name__}: {exc} (CMLMON_DEBUG=1 shows the traceback)", FAILURE)


if __name__ == "__main__":
    main()
