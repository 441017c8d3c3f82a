"""Where the services are and who the caller is: flags first, then CMLMON_* environment variables, then the
addresses `make run` uses. Loaded once per command, when it first needs a connection."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cmlmon_cli.errors import USAGE, CliError

# Written by `make run` when the services require a token; used when no token is given otherwise.
DEFAULT_TOKEN_FILE = Path(".run/token")


class CliSettings(BaseSettings):
    """CMLMON_REGISTRY, CMLMON_NOTIFIER, CMLMON_TOKEN, CMLMON_TOKEN_FILE, CMLMON_CA, CMLMON_CERT, CMLMON_KEY,
    CMLMON_CALL_TIMEOUT; a flag of the same name wins over its variable."""

    model_config = SettingsConfigDict(env_prefix="CMLMON_", case_sensitive=False, extra="ignore", frozen=True)

    registry: str = Field(default="127.0.0.1:50051", min_length=1, description="registry gRPC address host:port")
    notifier: str = Field(default="127.0.0.1:50052", min_length=1, description="notifier gRPC address host:port")
    token: str = Field(default="", description="bearer token sent as `authorization: Bearer <token>`")
    token_file: Path | None = Field(default=None, description="file holding the bearer token")
    ca: Path | None = Field(default=None, description="CA certificate (PEM): use TLS and trust this CA")
    cert: Path | None = Field(default=None, description="client certificate (PEM) for mutual TLS")
    key: Path | None = Field(default=None, description="client private key (PEM) for mutual TLS")
    call_timeout: float = Field(default=30.0, gt=0, le=3600, description="seconds one unary call may take")

    def bearer_token(self) -> str:
        """The token: given directly, else read from token_file, else from .run/token when that exists."""
        if self.token:
            return self.token.strip()
        path = self.token_file or (DEFAULT_TOKEN_FILE if DEFAULT_TOKEN_FILE.is_file() else None)
        if path is None:
            return ""
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read the token file {path}: {exc.strerror}", USAGE) from None

    def tls_files(self) -> tuple[bytes, bytes | None, bytes | None] | None:
        """(CA, client key, client certificate) when TLS is asked for; None for a plaintext connection."""
        if self.ca is None:
            if self.cert or self.key:
                raise CliError("--cert/--key need --ca (CMLMON_CA): mutual TLS is TLS with a client certificate",
                               USAGE)
            return None
        if (self.cert is None) != (self.key is None):
            raise CliError("--cert and --key go together (CMLMON_CERT, CMLMON_KEY)", USAGE)
        return _read(self.ca, "CA"), _read_opt(self.key, "key"), _read_opt(self.cert, "certificate")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the {what} file {path}: {exc.strerror}", USAGE) from None


def _read_opt(path: Path | None, what: str) -> bytes | None:
    return None if path is None else _read(path, what)


def load_settings(**flags: object) -> CliSettings:
    """Settings from the environment with the flags that were given (None = not given) on top. A bad value ends
    the command with exit code 2 and the variable's name; the value itself is never echoed (it may be a
    token)."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return CliSettings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            where = f"--{name.replace('_', '-')}" if name in given else f"CMLMON_{name.upper()}"
            problems.append(f"{where}: {err['msg']}")
        raise CliError("invalid settings: " + "; ".join(problems), USAGE) from None
