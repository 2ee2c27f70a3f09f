"""Stopping a run on SIGINT / SIGTERM with its work saved: the preemption path.

A preemptible VM gets SIGTERM and, a grace period later, SIGKILL; a run that just died
would lose up to ``checkpoint.every`` steps. So while a run trains (:class:`StopRequest`):

* the first SIGINT or SIGTERM asks it to stop: the step in flight finishes, that step is
  saved (and waited for), and the run raises :class:`Stopped`; the command line prints one
  line with the resume command and exits ``128 + the signal number`` (130, 143);
* the stop is bounded by ``grace_seconds`` (``--grace-seconds``): if the run has not
  stopped by then (a step, compile or save that outlasts it), the process exits with a
  line that says no checkpoint of the current step was written;
* a second signal aborts at once.

Python runs a signal handler only when the main thread comes back to the interpreter, and
a training step, a compile or a save keeps it inside XLA or TensorStore for as long as they
take. So the signals are also written to a pipe (``signal.set_wakeup_fd``) that a watcher
thread reads: it starts the grace clock, prints the notice and aborts on a second signal
while the main thread is still busy. Once the main thread's handler has run, both signals
are back to the operating system's default action (terminate), which nothing can delay.

With several processes, all must stop at the same step (a save is collective), and a
signal may reach only some. They agree (:func:`tarka_jax.runtime.distributed.any_process`)
at the steps that are multiples of ``train.log_every``, where the loop already waits on the
device: a stop is honoured within ``log_every`` steps. One process stops at the next step.

Messages go straight to file descriptor 2 (``os.write``): one written with ``print`` could
land inside a progress bar's write to the same stream and fail.
"""

from __future__ import annotations

import os
import signal
import threading

from tarka_jax.runtime.distributed import any_process

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_GRACE_SECONDS = 120.0
MAX_GRACE_SECONDS = 7 * 24 * 3600.0


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
    request simply never comes); the handlers and wakeup fd it replaced come back on exit.
    """

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS, process_count: int = 1):
        self.grace_seconds = grace_seconds
        self.process_count = process_count
        self.signum: int | None = None
        self._old: dict[int, object] = {}
        self._old_fd = -1
        self._pipe: tuple[int, int] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()  # the notice and the clock start once, end once
        self._announced = self._done = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._pipe = os.pipe()
        os.set_blocking(self._pipe[1], False)
        self._old_fd = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        for s in SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        threading.Thread(target=self._watch, args=(self._pipe[0],), daemon=True,
                         name="tarka-jax-stop").start()
        return self

    def __exit__(self, *exc) -> None:
        self._finish()
        for s, handler in self._old.items():
            signal.signal(s, handler)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_fd)
            os.close(self._pipe[1])  # the watcher reads EOF, closes its end and ends

    def _finish(self) -> None:
        """The run has stopped (or ended): no clock, no notice, no abort from now on."""
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()

    def _notice(self, signum: int) -> None:
        """The first signal, seen by the main thread's handler or the watcher, whichever
        runs first: ask for the stop, say so, start the grace clock."""
        with self._lock:
            if self._announced or self._done:
                return
            self._announced = True
            self.signum = signum
            _say(f"tarka-jax: {signal.Signals(signum).name}: stopping after the current step "
                 f"with a checkpoint (within {self.grace_seconds:g} s); a second signal "
                 "aborts at once")
            self._timer = threading.Timer(self.grace_seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _handle(self, signum, frame) -> None:
        """The main thread's handler: the stop is asked, and the next signal is the OS
        default action."""
        self._notice(signum)
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL)

    def _watch(self, fd: int) -> None:
        """Reads the signals off the wakeup pipe while the main thread may be busy in XLA."""
        seen = 0
        while data := os.read(fd, 64):
            for signum in data:
                if signum not in SIGNALS:
                    continue
                seen += 1
                if seen == 1:
                    self._notice(signum)
                    continue
                with self._lock:
                    if self._done:
                        continue
                _say(f"tarka-jax: a second {signal.Signals(signum).name}: aborting now")
                os._exit(128 + signum)
        os.close(fd)

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
        self._finish()
        return Stopped(self.signum or signal.SIGTERM, step, saved)
