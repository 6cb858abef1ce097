"""SIGINT and SIGTERM of a foreground process (the CLI) as an exception, so that a run in
progress is marked cancelled (``lifecycle.execute_run``) before the process exits, instead of
staying ``running`` forever (SIGTERM's default action ends the process on the spot)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached a foreground run (see :func:`interrupts`)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(self.signame)


@contextmanager
def interrupts() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (SIGTERM
    would otherwise end the process before the run is marked). After the first signal both are
    ignored until the block ends, so a second Ctrl-C cannot cut short the write of the cancel."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
