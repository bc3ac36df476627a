"""SIGTERM taken as Ctrl-C: what a scheduler cancelling a run, ``docker stop`` or ``kill`` sends
ends the runs under way as interrupted, removes their temporary files and exits 130, where
Python's default would end the process on the spot, its runs left 'running'.

A thread of its own hears of SIGTERM (through the signal module's wakeup file) and sends the
process SIGINT: a statement the server is working on is then cancelled as Ctrl-C cancels it
(the driver's handler), which a Python handler for SIGTERM could not do before the statement
ends (it runs on the main thread, between Python steps). Should the wakeup file be taken over
by someone else, that handler raises KeyboardInterrupt itself."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_terminated = threading.Event()  # this process took SIGTERM as its interruption
_lock = threading.RLock()  # the main thread's handler may run while that thread holds it
_state = {"interrupted": False, "listening": False}  # interrupted: by SIGTERM or a heard Ctrl-C


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM is taken as Ctrl-C, once: a SIGTERM after the process was interrupted
    (by SIGTERM or Ctrl-C) is dropped, as it would cut short the interrupted runs' ending, also
    after the block; a signal that comes as the block ends is dropped too. Only the main thread
    handles signals: elsewhere (a flow's task thread, say) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    heard, wake = os.pipe()
    os.set_blocking(wake, False)
    with _lock:
        _state.update(interrupted=False, listening=True)
    _terminated.clear()
    previous_wakeup = signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, _sigint)
    try:
        listener = threading.Thread(target=_listen, args=(heard,), name="etl-sigterm", daemon=True)
        listener.start()
        yield
    finally:
        with _lock:
            _state["listening"] = False  # from here on, SIGTERM sends no SIGINT
        signal.signal(signal.SIGTERM, signal.SIG_IGN if _state["interrupted"] else previous)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)
        signal.set_wakeup_fd(previous_wakeup)
        os.close(wake)  # the listener reads the end of the pipe and closes it


def _claim() -> bool:
    """Whether this SIGTERM is the process's interruption (the first, while listening); the
    caller holds the lock."""
    if _state["interrupted"] or not _state["listening"]:
        return False
    _state["interrupted"] = True
    _terminated.set()
    return True


def _sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM's Python handler, on the main thread: the listener has most often acted on it
    already; if not, the interruption is raised here."""
    with _lock:
        claimed = _claim()
    if claimed:
        raise KeyboardInterrupt


def _sigint(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C, as Python's own handler takes it, the process marked interrupted first; one
    that comes as the block ends (the listener's, or a person's) is dropped: what the block
    did is done."""
    with _lock:
        if not _state["listening"]:
            return
        _state["interrupted"] = True
    raise KeyboardInterrupt


def _listen(heard: int) -> None:
    """Read the signals the wakeup file reports: a Ctrl-C marks the process interrupted; the
    first SIGTERM before any sends it SIGINT. Ends when the file's other end is closed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # SIGINT is the other threads'
    try:
        while data := os.read(heard, 64):
            for number in data:
                with _lock:
                    if number == signal.SIGINT:
                        _state["interrupted"] = True
                    elif number == signal.SIGTERM and _claim():
                        os.kill(os.getpid(), signal.SIGINT)
    finally:
        os.close(heard)


def terminated() -> bool:
    """Whether this process took SIGTERM as its interruption (not Ctrl-C): a fleet's parent then
    passes it on to its workers, which a terminal's Ctrl-C reaches by themselves."""
    return _terminated.is_set()
