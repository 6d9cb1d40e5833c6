"""Run a LocalHub in the foreground: `python -m hf_summary.testing [--root DIR] [--port N] [--host HOST]`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from .hub import LocalHub


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, serve until Ctrl-C (or SIGTERM), then stop cleanly."""
    parser = argparse.ArgumentParser(prog="python -m hf_summary.testing", description=__doc__)
    parser.add_argument("--root", help="folder holding the Hub's state (default: a temporary folder)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Ctrl-C too only asks to stop: a KeyboardInterrupt raised wherever the main thread is (printing the banner, or
    # in the middle of the server's shutdown) could leave the server's threads running and the process alive.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with LocalHub(args.root, host=args.host, port=args.port) as hub:
        print(f"Local Hub listening on {hub.endpoint} (root: {hub.root})")
        print(f"Token: {hub.token} (user: {hub.user})")
        for name, value in hub.env(xet=hub.xet).items():
            print(f"export {name}={value}")
        print("Press Ctrl-C to stop.", flush=True)
        stop.wait()
    print("Local Hub stopped.")


if __name__ == "__main__":
    main()
