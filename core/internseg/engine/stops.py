"""Stop signals from the start of a training process (kept free of heavy imports, so that it
listens before torch and mmengine load)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = ("SIGURG", "SIGTERM", "SIGUSR1")
# Stop signals that arrived before a PreemptionHook took over. Signal dispositions belong to
# the process, so this record does too.
_received: list[int] = []


@contextmanager
def listening_for_stops(signals: tuple[str, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Record stop signals from process start. Building a run takes seconds on the demo and
    minutes for the 6B trunk; meanwhile SIGURG's default is to be ignored (the warning would
    be lost) and SIGTERM's to die (the job would fail without a checkpoint). A recorded stop
    is honoured after the first iteration (engine.resilience.PreemptionHook). On exit the
    previous handlers come back and the record is cleared."""
    previous = {}
    for name in signals:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, lambda signum, frame: _received.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received.clear()


def early_stops() -> list[int]:
    return list(_received)
