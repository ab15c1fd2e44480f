"""Stopping cleanly: SIGINT and SIGTERM ask the trainer to finish the current step, save a
checkpoint and stop; a second SIGINT stops at once."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


@contextlib.contextmanager
def stop_on_signals(trainer, active: bool = True):
    """Within the block, SIGINT and SIGTERM call `trainer.request_stop()`. Signal handlers
    belong to the main thread; elsewhere, or when not `active`, nothing changes."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.request_stop()
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              "(Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
