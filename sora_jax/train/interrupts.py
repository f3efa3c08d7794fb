"""SIGTERM (preemption) and SIGINT (Ctrl-C) end a run cleanly instead of killing it.

The handler only records the signal; the loop finishes the step in flight, saves a checkpoint
(data iterator included), closes its writers and exits 0 for SIGTERM — a preempted job that
saved is a success for the scheduler, which restarts it — and 130 for SIGINT, the shell's code
for Ctrl-C. A second Ctrl-C while saving is ignored: the save is what protects the work.
"""
from __future__ import annotations

import signal
import threading

EXIT_CODES = {signal.SIGTERM: 0, signal.SIGINT: 130}


class Interrupted(SystemExit):
  """Raised after the loop saved on a signal; its code is the process's exit code."""

  def __init__(self, signum: int, message: str):
    super().__init__(EXIT_CODES.get(signum, 1))
    self.signum, self.message = signum, message


class StopRequests:
  """Context manager: while active, SIGTERM/SIGINT set `.signum` instead of killing."""

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # handlers live on the main thread
      for s in EXIT_CODES:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()
    return False

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else ""
