"""Stopping a run on SIGINT / SIGTERM with its work saved: the preemption path.

A preemptible VM gets SIGTERM and, a grace period later, SIGKILL; a run that just died
would lose up to ``checkpoint.every`` steps. So while a run trains (:class:`StopRequest`):

* the first SIGINT or SIGTERM asks it to stop: the step in flight finishes, that step is
  saved (and waited for), and the run raises :class:`Stopped`; the command line prints one
  line with the resume command and exits ``128 + the signal number`` (130, 143);
* the stop is bounded by ``grace_seconds`` (``--grace-seconds``): if the run has not
  stopped by then (a step, compile or save that outlasts it), the process exits at once
  with a line that says no checkpoint was written;
* a second signal aborts at once: after the first, both signals are back to the operating
  system's default action (terminate), which no call blocked in XLA can delay.

With several processes, all must stop at the same step (a save is collective), and a
signal may reach only some. They agree (:func:`tarka_jax.runtime.distributed.any_process`)
at the steps that are multiples of ``train.log_every``, where the loop already waits on the
device: a stop is honoured within ``log_every`` steps. One process stops at the next step.

Messages from the handler go straight to file descriptor 2 (``os.write``): a handler that
used ``print`` could land inside a progress bar's write to the same stream and fail.
"""

from __future__ import annotations

import os
import signal
import threading

from tarka_jax.runtime.distributed import any_process

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_GRACE_SECONDS = 120.0


class Stopped(KeyboardInterrupt):
    """A run that stopped on a signal; ``saved`` says whether ``step`` is on disk."""

    def __init__(self, signum: int, step: int, saved: bool):
        self.signum, self.step, self.saved = signum, step, saved
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _say(line: str) -> None:
    os.write(2, (line + "\n").encode("utf-8", "replace"))


class StopRequest:
    """A context in which SIGINT / SIGTERM ask the run to stop at a step boundary.

    Installed only in the main thread (elsewhere Python cannot take signals, and the
    request simply never comes); the handlers it replaced come back on exit.
    """

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS, process_count: int = 1):
        self.grace_seconds = grace_seconds
        self.process_count = process_count
        self.signum: int | None = None
        self._old: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        for s in SIGNALS:  # a second signal: the OS default, at once
            signal.signal(s, signal.SIG_DFL)
        _say(f"tarka-jax: {signal.Signals(signum).name}: stopping after the current step with "
             f"a checkpoint (within {self.grace_seconds:g} s); a second signal aborts at once")
        self._timer = threading.Timer(self.grace_seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        _say(f"tarka-jax: not stopped within --grace-seconds {self.grace_seconds:g}: exiting "
             "without a checkpoint of the current step (the last saved step is intact)")
        os._exit(128 + (self.signum or signal.SIGTERM))

    def should_stop(self, step: int, sync_every: int) -> bool:
        """Stop now? Every process gets the same answer at the same step."""
        if self.process_count == 1:
            return self.signum is not None
        if step % sync_every:
            return False
        return any_process(self.signum is not None)

    def stopped(self, step: int, saved: bool) -> Stopped:
        """The exception that ends the run (a process the signal missed reports SIGTERM)."""
        if self._timer is not None:
            self._timer.cancel()
        return Stopped(self.signum or signal.SIGTERM, step, saved)
