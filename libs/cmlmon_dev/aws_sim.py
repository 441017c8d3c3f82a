"""The simulated AWS of `make run`: moto's server on a port, seeded with the demo fleet, with datapoints
generated every few seconds. Run as `python -m cmlmon_dev.aws_sim --port 4566 --manifest PATH`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from cmlmon_dev.demo import generate_forever, seed_fleet, write_manifest
from cmlmon_dev.servers import MotoServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--manifest", type=Path, required=True, help="where to write the seeded fleet (JSON)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between generated datapoints")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines drown everything else

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    server = MotoServer(args.port).start()
    try:
        fleet = seed_fleet(server.url)
        write_manifest(args.manifest, fleet)
        # Only now: a stop while seeding (make run's Ctrl-C during start-up) ends the process at once, as
        # SIGTERM does by default, instead of after seeding.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        print(f"simulated AWS on {server.url}: {len(fleet)} demo instances in "
              f"{len({w.region for w in fleet})} regions", flush=True)
        threading.Thread(target=generate_forever, args=(server.url, fleet, args.every), daemon=True).start()
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
