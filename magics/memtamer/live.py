"""The live line under a running cell, for those who ask (``%memtamer --live
on``, or ``c.Memtamer.live = True`` in an IPython profile's config; off by
default, so saved notebooks do not change): once a cell has run
LIVE_AFTER_SECONDS, one line under it says the kernel's RSS now, the cell's
peak so far and the room left, updated in place through a display_id every
LIVE_EVERY_SECONDS, and written a last time with the cell's end figures.

A Python thread that lives only while a cell runs.  It starts in a copy of
the cell's context, so that ipykernel sends its messages to the cell; it is
stopped before os.fork() and started again in the parent (a thread alive at
a fork makes Python 3.12+ warn), and it is joined before the cell's record
is made."""

import contextvars
import os
import threading

from . import _core
from .sizes import format_size

LIVE_AFTER_SECONDS = 2.0
LIVE_EVERY_SECONDS = 1.0


def live_line(running, guard, ended=False):
    """The line for running (_core.cell_running()) and guard (its status)."""
    parts = [f"cell {running['cell']} {'ran' if ended else 'running'} {running['seconds']:.0f} s"]
    if running["rss"] is not None:
        parts.append(f"RSS {format_size(running['rss'])}" + ("" if ended else " now"))
    if running["peak_rss"] is not None and running["rss_before"] is not None:
        parts.append(f"peak {format_size(running['peak_rss'] - running['rss_before'], signed=True)}"
                     + ("" if ended else " so far"))
    if guard["enabled"] and running["rss"] is not None:
        parts.append(f"{format_size(max(guard['budget'] - running['rss'], 0))} left of its budget")
    return "memtamer: " + " · ".join(parts)


class LiveLine:
    """The live line of one shell: begin() when a cell starts, end() before
    its record is made."""

    def __init__(self, shell, enabled=False):
        self.shell, self.enabled = shell, enabled
        self.thread = self.stopping = self.handle = None
        self.context = None
        _LIVE_LINES.add(self)

    def begin(self):
        if not self.enabled or getattr(self.shell, "kernel", None) is None:
            return  # a terminal has no display to update in place
        self.handle = None
        self.context = contextvars.copy_context()
        self._start()

    def end(self):
        """Stops the thread; a line that was shown gets the end figures."""
        self._stop()
        self.context = None
        if self.handle is not None:
            running = _core.cell_running()
            if running is not None:
                self.handle.update({"text/plain": live_line(running, _core.guard_status(),
                                                            ended=True)}, raw=True)
            self.handle = None

    def close(self):
        self._stop()
        _LIVE_LINES.discard(self)

    def _start(self):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.context.run, args=(self._follow,),
                                       name="memtamer-live", daemon=True)
        self.thread.start()

    def _stop(self):
        if self.thread is not None:
            self.stopping.set()
            self.thread.join()
            self.thread = None

    def _follow(self):
        from IPython.display import display

        while not self.stopping.wait(LIVE_EVERY_SECONDS):
            running = _core.cell_running()
            if running is None or running["seconds"] < LIVE_AFTER_SECONDS:
                continue
            line = {"text/plain": live_line(running, _core.guard_status())}
            if self.handle is None:
                self.handle = display(line, raw=True, display_id=True)
            else:
                self.handle.update(line, raw=True)

    # os.fork(): no thread of ours at the fork; the parent's cell goes on.
    def _before_fork(self):
        self._stop()

    def _after_fork_in_parent(self):
        if self.context is not None:
            self._start()


_LIVE_LINES = set()


def _before_fork():
    for live in list(_LIVE_LINES):
        live._before_fork()


def _after_fork_in_parent():
    for live in list(_LIVE_LINES):
        live._after_fork_in_parent()


def _after_fork_in_child():
    for live in list(_LIVE_LINES):
        live.thread = live.context = live.handle = None  # the parent's, not the child's


# With memtamer's C threads (module.c), so that on 3.13 it starts again only
# once os.fork() has checked for threads; the child keeps none of the parent's.
_core.at_fork(_before_fork, _after_fork_in_parent)
os.register_at_fork(after_in_child=_after_fork_in_child)
