"""`python -m tests.e2e.registry.crashing_registry`: the registry process as `python -m registry` runs it,
wired with a hook that kills it between saving a worker with its event and publishing that event, the
moment the outbox exists for. Production never wires this hook."""

from __future__ import annotations

import asyncio
import logging
import os

from registry.adapters.repository import Stored
from registry.entrypoints.main import amain

EXIT_CODE = 70


def crash_after_save(saved: Stored) -> None:
    logging.getLogger("registry").warning("crashing after save on purpose", extra={"worker_id": saved.worker.id})
    os._exit(EXIT_CODE)


if __name__ == "__main__":
    asyncio.run(amain(on_saved=crash_after_save))
