"""Background threads that leave signals to the main thread.

A signal sent to the process (SIGTERM from a cluster, Ctrl-C) goes to any one of its threads that does not block it.
Python runs handlers in the main thread only, so when the kernel picks one of our threads, a main thread blocked in a
system call (reading stdin, waiting on a socket) never wakes to run its handler: `push_on_sigterm` and the user's own
handlers would wait forever. Our threads block the asynchronous signals, so the kernel delivers them to the main
thread (or to the user's own threads).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

# Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL) must stay deliverable to the thread that caused them.
_ASYNC_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                            signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD, signal.SIGPIPE})


def _block_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)


def start_thread(target: Callable[..., Any], name: str, args: tuple[Any, ...] = ()) -> threading.Thread:
    """Start a daemon thread running `target(*args)` with the asynchronous signals blocked."""

    def run() -> None:
        _block_signals()
        target(*args)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


class Timer(threading.Timer):
    """`threading.Timer`, as a daemon thread with the asynchronous signals blocked."""

    def __init__(self, interval: float, function: Callable[..., Any], args: tuple[Any, ...] = (), *,
                 name: str) -> None:
        super().__init__(interval, function, args)
        self.name = name
        self.daemon = True

    def run(self) -> None:
        _block_signals()
        super().run()
