"""Preemption: SIGTERM (or SIGUSR1) asks a training stage to stop at the next step.

SLURM sends SIGTERM before it ends a job (time limit, preemption; the profile asks for it
ahead of time with ``--signal``), then SIGKILL after the grace period. :func:`watch` turns the
signal into a flag that :func:`langtail.train.loop.fit` reads after every step: it writes a
mid-epoch resume file (step, sampler position, RNG state, partial epoch loss) and raises
:class:`Preempted`, so the command exits non-zero and the requeued (or retried) job resumes
from that step.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Callable, Iterator

log = logging.getLogger(__name__)

#: signals that request a stop (SLURM: SIGTERM before the kill; ``--signal=USR1@...`` for an earlier notice)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(RuntimeError):
    """Training stopped on a signal after writing its resume file (rerun to continue)."""


@contextlib.contextmanager
def watch(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[Callable[[], bool]]:
    """Within the block, the signals set a flag instead of ending the process; yields a
    function that tells whether one arrived. Outside the main thread (no handlers possible)
    the flag stays False. The previous handlers are restored on exit."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):  # noqa: ARG001
        if not got:
            log.warning("received %s: stopping after this step (a resume file is written; rerun to continue)",
                        signal.Signals(signum).name)
        got.append(signum)

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield lambda: bool(got)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
