"""Running the installed `cmlmon` console script: as a plain subprocess (stdin not a terminal, output piped)
or in a pseudo-terminal of a known size, and publishing what a collector would publish."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from cml.monitor.v1 import events_pb2, worker_pb2
from cmlmon_core import subjects
from cmlmon_core.messages import encode

CMLMON = Path(sys.executable).parent / "cmlmon"
AMI = "ami-12c6146b"


@dataclass
class Fleet:
    """Where the services of this module listen, and how to run the command line against them."""

    registry: str
    notifier: str
    nats_url: str
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment without any CMLMON_* of its own, pointed at this module's services."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMLMON_") and k not in ("COLUMNS", "LINES")}
        env.update({"CMLMON_REGISTRY": self.registry, "CMLMON_NOTIFIER": self.notifier, **extra})
        return env

    def argv(self, *args: str) -> list[str]:
        return [str(CMLMON), *args]

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        """`cmlmon ARGS` with stdin and stdout not terminals; output captured as text."""
        return subprocess.run([str(CMLMON), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=self.env(**env), cwd=self.cwd)

    def terminal(self, *args: str, cols: int = 200, rows: int = 50) -> Terminal:
        return Terminal([str(CMLMON), *args], self.env(TERM="xterm-256color"), self.cwd, cols, rows)

    def json(self, *args: str) -> Any:
        done = self.run(*args, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


async def publish_sample(js: JetStreamContext, worker: dict[str, Any], status: worker_pb2.WorkerStatus,
                         **fields: Any) -> None:
    """What a collector publishes after polling the worker's instance (the registry and notifier consume it)."""
    sample = events_pb2.MetricSample(worker_id=worker["id"], region=worker["region"],
                                     instance_id=worker["instance_id"], status=status, **fields)
    sample.observe_time.GetCurrentTime()
    data, headers = encode(sample)
    await js.publish(subjects.metric(worker["region"], worker["id"]), data, headers=headers)


RUNNING = worker_pb2.WORKER_STATUS_RUNNING
STOPPED = worker_pb2.WORKER_STATUS_STOPPED


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Za-z0-9]|\x1b[=>]")


def plain(raw: bytes) -> str:
    """What a terminal shows of raw output, line by line: escape sequences and carriage returns removed."""
    return _ANSI.sub("", raw.decode(errors="replace")).replace("\r", "")


class Terminal:
    """A command whose stdin, stdout and stderr are a pseudo-terminal of cols x rows; all it draws is kept."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, cols: int, rows: int) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                        start_new_session=True)
        os.close(slave)
        self._master = master
        self.raw = b""

    @property
    def text(self) -> str:
        return plain(self.raw)

    def read_until(self, found: Callable[[str], bool], timeout: float = 60.0, since: int = 0) -> str:
        """Read until found(text drawn after offset since) holds; that text. AssertionError at the timeout, or
        when the command ends first."""
        deadline = time.monotonic() + timeout
        while not found(plain(self.raw[since:])):
            if time.monotonic() > deadline:
                raise AssertionError(f"not on the terminal after {timeout}s:\n{plain(self.raw[since:])[-3000:]}")
            if not self._read(0.2) and self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{plain(self.raw[since:])[-3000:]}")
        return plain(self.raw[since:])

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self._master], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        self.raw += chunk
        return bool(chunk)

    def type(self, text: str) -> None:
        os.write(self._master, text.encode())

    def wait(self, timeout: float = 60.0) -> int:
        """The exit code, reading on meanwhile (a full terminal would block the command)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout}s:\n{self.text[-3000:]}")
            self._read(0.1)
        while self._read(0.05):
            pass
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._master)
