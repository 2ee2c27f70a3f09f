"""SIGINT and SIGTERM as an exception a job can act on: stop promptly, say what was kept.

Why not Python's default: SIGTERM's default kills the process with no word, and a process
started in the background by a non-interactive shell (``cmd &`` in a script, many job
launchers) inherits SIGINT *ignored*, so ``kill -INT`` did nothing and the job ran to the end.
Inside :func:`stop_on_signals` both signals raise :class:`Interrupted` in the main thread
at the next Python instruction (after the current XLA call returns): ``finally`` blocks run,
temporaries are removed, and the command prints one line and exits ``128 + signal``.

A raise from a signal handler can land where Python swallows it: in a garbage-collector
callback (jax registers one), a ``__del__`` or a weakref callback ("Exception ignored in
..."). That is how the first SIGINT used to vanish. So the handler also records the signal,
and the job calls :func:`check` at its safe points (every record read, every encode chunk):
a swallowed signal is raised there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived. A ``BaseException`` (like ``KeyboardInterrupt``): an
    ``except Exception`` on the way up cannot swallow it. ``message`` says what was kept."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(signum, message)
        self.signum = signum
        self.message = message

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(signals=SIGNALS) -> Iterator[None]:
    """Raise :class:`Interrupted` on ``signals`` while inside; the old handlers return after.

    Outside the main thread (where Python cannot set handlers) it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _pending.append(signum)
        raise Interrupted(signum)

    old = {s: signal.getsignal(s) for s in signals}
    _pending.clear()
    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _pending.clear()


_pending: list[int] = []  # signals received inside stop_on_signals


def check() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived (even one whose raise was
    swallowed on the way): call it where stopping is safe."""
    if _pending:
        raise Interrupted(_pending[0])


__all__ = ["Interrupted", "check", "stop_on_signals"]
