"""The speed-up of a single account's sync, with the plain path beside it (``--serial`` turns
it off): an entity's apply on a thread of its own while the next entity reads its input on a
spare connection."""

from __future__ import annotations

import contextlib
import threading

from etl import db, hooks
from etl.apply import apply_run
from etl.errors import EtlError
from etl.log import get_logger
from etl.progress import NoProgress
from etl.run import EntityRun, RunResult, close_failed_run, finish_run


class Sessions:
    """The sync's connection, and a spare one for the run that starts while an apply holds the
    first (opened before the first run, closed at the end)."""

    def __init__(self, conn: db.Connection) -> None:
        self.conn = conn
        self.spare: db.Connection | None = None

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spare is not None:
            db.close(self.spare)

    def open_spare(self) -> bool:
        """Open the spare connection; False if the server refuses it (too many clients, say):
        the sync then runs one entity after the other, as the overlap is only a speed-up."""
        try:
            self.spare = db.clone(self.conn)
        except EtlError as error:
            get_logger().warning("no_second_connection", message=str(error))
            return False
        return True

    def free(self, applying: Applying | None) -> db.Connection:
        """A connection that ``applying``, if still applying, does not hold."""
        if applying is None or applying.thread is None or applying.run.conn is not self.conn:
            return self.conn
        assert self.spare is not None  # an apply goes to the background only with it
        return self.spare


# What an entity's plan reads of what the steps before it store: the stored agents (roles'
# pairs and groups' members name them). Groups plan and stage while roles applies.
PLAN_READS: dict[str, tuple[str, ...]] = {"agents": (), "roles": ("agents",), "groups": ("agents",)}


def plan_waits_for(entity: str, previous: Applying | None) -> bool:
    """Whether ``entity`` must wait for ``previous`` to commit before it plans."""
    return previous is not None and previous.run.entity in PLAN_READS[entity]


def wait_for_previous(run: EntityRun, previous: Applying | None, results: list[RunResult]) -> None:
    """Settle ``previous`` (see :func:`settle`), its summary line before this run's progress."""
    if previous is not None and not previous.settled:
        run.watch.progress.close()
    settle(previous, results)


HEARD_WITHIN = 0.05  # seconds: how soon the main thread, waiting for an apply, hears Ctrl-C


class Applying:
    """A run's apply: at once, or on a thread of its own (``background``) while the next
    entity reads its input (and plans and stages it, for groups); :func:`settle` waits for
    it."""

    def __init__(self, run: EntityRun, allow_mass_removal: bool, *, background: bool) -> None:
        self.run = run
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.settled = False  # waited for, and its result or failure taken
        self.done = threading.Event()  # the apply has ended, committed or failed
        if not background:
            self.apply(allow_mass_removal)
            return
        run.watch.progress.stage("apply (one transaction)")
        run.watch.progress.close()  # the terminal line is the next entity's
        run.watch.progress = NoProgress()
        thread = threading.Thread(
            target=self.apply, args=(allow_mass_removal,), name=f"etl-apply-{run.entity}"
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: apply here and now
            self.apply(allow_mass_removal)
            return
        self.thread = thread

    def apply(self, allow_mass_removal: bool) -> None:
        run = self.run
        try:
            with run.watch.stage("apply", "apply (one transaction)"):
                apply_run(
                    run.conn, run.account_id, run.run_id, allow_mass_removal=allow_mass_removal
                )
                hooks.reached("apply", run.entity)
                db.commit(run.conn, "apply")
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()

    def wait(self) -> None:
        """Wait for the apply's thread to end. Ctrl-C cancels the statement in the server, as
        it does for an apply on the main thread, and still waits (a second Ctrl-C too): the
        connection is the thread's until it ends."""
        if self.thread is None:
            return
        interrupted: KeyboardInterrupt | None = None
        while True:  # every step inside the try, so that no Ctrl-C leaves before the apply ends
            try:
                hooks.reached("settle", self.run.entity)
                self.wait_for_done()
                break
            except KeyboardInterrupt as error:
                interrupted = interrupted or error
                with contextlib.suppress(KeyboardInterrupt):
                    self.heard_ctrl_c()
        try:
            self.thread.join()  # the apply has ended: the thread only returns
        except KeyboardInterrupt as error:
            interrupted = interrupted or error
        if interrupted is not None:
            raise interrupted

    def heard_ctrl_c(self) -> None:
        """Cancel the apply's statement in the server, and say so (a Ctrl-C landing meanwhile
        changes nothing)."""
        with contextlib.suppress(Exception, KeyboardInterrupt):
            self.run.conn.adbc_cancel()
            self.run.log.warning("interrupted_waiting_for_apply")

    def wait_for_done(self) -> None:
        """Wait for the apply to end, in short waits: Ctrl-C may land on any thread (the
        driver's and the libraries' too), and one that lands elsewhere does not wake a wait
        without a timeout. (Not ``Thread.join``: one that Ctrl-C interrupts marks the thread
        stopped while it still runs, Python 3.11.)"""
        while not self.done.wait(HEARD_WITHIN):
            pass


def settle(applying: Applying | None, results: list[RunResult]) -> None:
    """Wait for ``applying``, if any: add its result to ``results``, or close its run and raise
    its failure (once: a second call does nothing)."""
    if applying is None or applying.settled:
        return
    interrupted: KeyboardInterrupt | None = None
    try:
        applying.wait()
    except KeyboardInterrupt as error:
        interrupted = error  # the apply ended all the same; its run is closed first
    applying.settled = True
    if applying.error is not None:
        close_failed_run(applying.run, applying.error)
        raise interrupted or applying.error
    results.append(finish_run(applying.run))
    if interrupted is not None:
        raise interrupted
