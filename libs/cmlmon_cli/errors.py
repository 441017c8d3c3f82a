"""What can go wrong for a command line user, and the exit code each kind of failure ends with.

gRPC errors are translated here, once: a command never sees a grpc.RpcError."""

from __future__ import annotations

import grpc

OK = 0
FAILURE = 1
USAGE = 2  # also what typer answers for a bad flag or argument
NOT_FOUND = 3
DENIED = 4  # UNAUTHENTICATED or PERMISSION_DENIED

_EXIT_CODES = {
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED: DENIED,
    grpc.StatusCode.PERMISSION_DENIED: DENIED,
    grpc.StatusCode.INVALID_ARGUMENT: USAGE,
}


class CliError(Exception):
    """One line for stderr (without the "error: " in front), the process's exit code, and the gRPC status
    behind it when there is one."""

    def __init__(self, message: str, exit_code: int = FAILURE, status: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


def from_rpc(exc: grpc.RpcError, service: str, address: str) -> CliError:
    """`NOT_FOUND: worker 'x' not found`: the status name and the server's message, on one line. A server that
    cannot be reached at all gets a sentence saying which one and where, instead of gRPC's address list."""
    code: grpc.StatusCode = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and _unreachable(details):
        return CliError(f"UNAVAILABLE: cannot reach the {service} at {address} ({_reason(details)}); is it "
                        f"running? (--{service} or CMLMON_{service.upper()} sets the address)", FAILURE, code)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"no answer from the {service} at {address} in time ({details})"
    return CliError(f"{code.name}: {' '.join(details.split())}", _EXIT_CODES.get(code, FAILURE), code)


def _unreachable(details: str) -> bool:
    lowered = details.lower()
    return any(s in lowered for s in ("failed to connect", "connection refused", "dns resolution failed",
                                      "name resolution", "connect failed", "handshake"))


def _reason(details: str) -> str:
    lowered = details.lower()
    for needle, reason in (("connection refused", "connection refused"), ("dns", "unknown host"),
                           ("name resolution", "unknown host"), ("handshake", "TLS handshake failed"),
                           ("timeout", "timed out"), ("timed out", "timed out")):
        if needle in lowered:
            return reason
    return " ".join(details.split())
