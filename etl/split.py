"""Split decoding: a big folder decoded on two cores.

A worker process decodes the second part of the folder's files into an Arrow IPC file of its
own while this process decodes the first part, which is bigger by what it decodes while the
worker starts. Big means many small files (one per agent: cut by count) or a few thousand
pages of many megabytes (cut by size). The parts then join in file order: files recorded,
errors listed and ordinals numbered exactly as one pass would have done them. The worker is a
plain ``python -c`` child that imports only the decoder (not the CLI, as a ``multiprocessing``
spawn would); its request goes as a pickle in a file, its result comes back as one on its
stdout. A worker that ends without its result (killed, out of memory) costs only the
speed-up: this process then decodes the second part itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl import BATCH_VALUES
from etl.batches import Records, RowBatches
from etl.decode import Decoded, decode_files, decode_into, in_read_order
from etl.errors import EtlError
from etl.log import get_logger, peak_rss_kb
from etl.pages import CHUNK_BYTES, FileDigest
from etl.records import RECORD_KINDS, RecordError, RecordKind, batch_schema
from etl.source import FolderFiles, InputFile

# The worker takes about 0.4 s to start, in which this process decodes about 25,000 small
# files; the rest is shared. Below 60,000 files the gain is under 0.1 s (50,000: 0.09 s).
MIN_FILES = 60_000
HEAD_START = 25_000  # files more for this process than for the worker
# Pages are cut by size: folders of at most MAX_SIZED files are sized (a stat each). At L,
# 2,000 pages of 25 KB (200,000 agents, 50 MB) decode in 1.30 s in one pass and in 1.03-1.05 s
# split with this process 25 MB ahead (14 MB: 1.36-1.40 s; 32 MB: 1.08-1.10 s): the worker
# costs more than its start there, as it writes its records out and this process reads them
# back. Below 40 MB the worker's share would be too small to pay for it.
MAX_SIZED = 10_000
MIN_BYTES = 40 << 20
HEAD_START_BYTES = 25 << 20


@dataclass(frozen=True)
class WorkerPart:
    """What the worker sends back: its files' digests in order, its errors, and the EtlError
    (an InputError) that stopped it, or the traceback of anything else."""

    digests: list[tuple[str, int, str]]
    errors: list[RecordError]
    failure: EtlError | None = None
    crash: str | None = None
    peak_rss_kb: int = 0  # the worker's own peak (VmHWM), where /proc tells it


def split_parts(files: Sequence[InputFile]) -> tuple[FolderFiles, FolderFiles] | None:
    """The folder listing ``files`` cut into this process's part and the worker's, or None when
    one pass is as fast: too little to decode, files named one by one, or a single core."""
    if not isinstance(files, FolderFiles) or _cores() < 2:
        return None
    if len(files) >= MIN_FILES:
        return files.split((len(files) + HEAD_START) // 2)
    if len(files) > MAX_SIZED:
        return None
    sizes = files.sizes()
    total = sum(sizes)
    if total < MIN_BYTES:
        return None
    ends = itertools.accumulate(sizes)
    at = next((i for i, end in enumerate(ends, 1) if end * 2 >= total + HEAD_START_BYTES), 0)
    return files.split(at) if 0 < at < len(files) else None


def worth_reading_ahead(files: Sequence[InputFile]) -> bool:
    """Whether a worker should start on half of the folder while this process does other
    work: many small files (a listing cut by count), and a core for each."""
    return isinstance(files, FolderFiles) and _cores() >= 2 and len(files) >= MIN_FILES


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (Linux)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class SecondPart:
    """A worker decoding the second part of a folder into an Arrow IPC file of its own, from
    its start until :func:`decode_split` takes its result (or :meth:`stop` ends it); its
    files sit beside ``spill``."""

    def __init__(
        self,
        kind: RecordKind,
        files: FolderFiles,
        spill: Path,
        chunk_bytes: int = CHUNK_BYTES,
        batch_values: int = BATCH_VALUES,
    ) -> None:
        self.kind, self.files = kind, files
        self.output = spill.with_name(spill.stem + "-second-part.arrow")
        self.request = spill.with_name(spill.stem + "-second-part.pickle")
        request = {
            "kind": kind.name,
            "root": files.root,
            "folder": files.folder,
            "names": files.names,
            "chunk_bytes": chunk_bytes,
            "batch_values": batch_values,
            "spill": self.output,
        }
        self.process = start_worker(request, self.request)
        # Its result (a digest per file: 10 MB for 100,000 files) is read as the worker sends
        # it: unread, the pipe would stop the worker, holding its memory, until it is joined.
        self.sent: list[bytes] = []
        self.reader = threading.Thread(target=self._read, name="etl-worker-result", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as sent:
            self.sent.append(sent.read())
        self.process.wait()

    def running(self) -> bool:
        """Whether the worker is still decoding or sending its result."""
        return self.reader.is_alive()

    def result(self) -> WorkerPart:
        """The worker's part, once it has ended (WorkerLost if it sent none)."""
        self.reader.join()
        return worker_part(self.sent[0] if self.sent else b"", self.process.returncode)

    def stop(self) -> None:
        """End the worker if it still runs (its part is not wanted), and remove its files."""
        if self.reader.is_alive():
            self.process.kill()
            self.reader.join()
        self.output.unlink(missing_ok=True)
        self.request.unlink(missing_ok=True)


def decode_split(
    kind: RecordKind,
    first: FolderFiles,
    second: FolderFiles | SecondPart,
    spill: Path,
    on_file: Callable[[FileDigest], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    batch_values: int = BATCH_VALUES,
) -> Decoded:
    """:func:`~etl.decode.decode_files` of a folder listing cut in two (:func:`split_parts`),
    its second part in a worker, started here or before (a :class:`SecondPart`)."""
    records = Records(batch_schema(kind), spill)
    errors: list[RecordError] = []
    rows = RowBatches(kind, records, batch_values, errors=errors)
    worker = None
    try:
        if isinstance(second, SecondPart):
            worker = second
        else:
            worker = SecondPart(kind, second, spill, chunk_bytes, batch_values)
        decode_into(kind, first, rows, errors, on_file, chunk_bytes)
        try:
            part = worker.result()
        except WorkerLost as lost:  # only a speed-up lost: this process decodes the rest
            get_logger().warning("decode_worker_lost", folder=first.folder, reason=str(lost))
            decode_into(kind, worker.files, rows, errors, on_file, chunk_bytes)
        else:
            get_logger().debug(
                "decode_split",
                folder=first.folder,
                files_here=len(first),
                files_in_worker=len(worker.files),
                worker_peak_rss_kb=part.peak_rss_kb,
            )
            for name, size, sha256 in part.digests:
                if on_file is not None:
                    on_file(FileDigest(name, size, sha256))
            if part.failure is not None:
                raise part.failure
            rows.add_spilled(worker.output)
            errors.extend(part.errors)
    except BaseException:
        records.close()
        raise
    finally:
        if worker is not None:
            worker.stop()  # still running only if this part failed
    return Decoded(records=rows.close(), errors=in_read_order(errors))


def start_worker(request: dict[str, Any], path: Path) -> subprocess.Popen[bytes]:
    """Start the worker on the request, written to ``path`` first: through its stdin, the
    request (a million names) would wait for the worker's imports."""
    with path.open("wb") as file:
        pickle.dump(request, file, protocol=pickle.HIGHEST_PROTOCOL)
    return subprocess.Popen(
        [sys.executable, "-c", "from etl.split import serve; serve()", str(path)],
        stdout=subprocess.PIPE,
    )


class WorkerLost(Exception):
    """The worker ended without decoding its part: killed, out of memory, or a crash."""


def worker_part(result: bytes, returncode: int | None) -> WorkerPart:
    """The worker's part from what it sent, or WorkerLost."""
    try:
        part = pickle.loads(result) if result else None
    except (pickle.UnpicklingError, EOFError, ValueError):  # cut short while it wrote
        part = None
    if not isinstance(part, WorkerPart):
        raise WorkerLost(f"the decode worker ended without a result (exit code {returncode})")
    if part.crash is not None:
        raise WorkerLost(f"the decode worker failed: {part.crash.strip().splitlines()[-1]}")
    return part


def serve() -> None:
    """The worker: decode the files the request names, send back a :class:`WorkerPart`."""
    with open(sys.argv[1], "rb") as file:
        request = pickle.load(file)
    digests: list[tuple[str, int, str]] = []
    try:
        files = FolderFiles(request["root"], request["folder"], request["names"])
        decoded = decode_files(
            RECORD_KINDS[request["kind"]],
            files,
            on_file=lambda d: digests.append((d.name, d.bytes, d.sha256)),
            chunk_bytes=request["chunk_bytes"],
            spill=request["spill"],
            batch_values=request["batch_values"],
        )
        decoded.records.persist()
        part = WorkerPart(digests, decoded.errors)
    except EtlError as error:
        part = WorkerPart(digests, [], failure=error)
    except BaseException:
        part = WorkerPart(digests, [], crash=traceback.format_exc())
    part = dataclasses.replace(part, peak_rss_kb=peak_rss_kb())
    try:
        pickle.dump(part, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # etl is gone (killed): nobody waits for this part
        os._exit(1)
