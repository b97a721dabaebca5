"""Progress of a long %shrink action: a bar in a notebook, a line on a terminal."""

import sys
import time

PROGRESS_AFTER = 1.0  # seconds before an action shows progress


class Progress:
    """Called as progress(done, total) between chunks; shows itself only
    once an action has run for PROGRESS_AFTER seconds."""

    def __init__(self, label, shell=None):
        self.label = label
        self.started = time.monotonic()
        self.last = 0.0
        self.handle = None
        self.shown = False
        self.notebook = shell is not None and type(shell).__name__ == "ZMQInteractiveShell"

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.started < PROGRESS_AFTER or now - self.last < 0.25:
            return
        self.last = now
        self._show(done / total if total else 1.0)

    def _show(self, fraction):
        text = f"{self.label}: {fraction:.0%} ({time.monotonic() - self.started:.1f} s)"
        if self.notebook:
            from IPython.display import display

            bundle = {"text/plain": text,
                      "text/html": f'<progress value="{fraction:.3f}" max="1"></progress> '
                                   f"<code>{text}</code>"}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        else:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
        self.shown = True

    def close(self):
        if self.shown:
            self._show(1.0)
            if not self.notebook:
                sys.stderr.write("\n")
