"""Pages: one input file read in bounded pieces, hashed as it is read.

A page that fits in one chunk is read whole. A bigger page whose top level is an array is cut
into *segments* between its records: each segment is itself a JSON array of some of the page's
records (``[`` + records + ``]``), so decoding never holds more than about a chunk of the page.
A cut is only taken after a ``}`` and before a ``,`` where the text up to it parses as an array,
which is so only at the page's top level (inside a string the text would end in the string).
Byte offsets in segments map back to the file by adding the segment's ``offset``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Generator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

import msgspec

from etl.source import InputFile

CHUNK_BYTES = 8 << 20  # how much of a page is read at a time
BOM = b"\xef\xbb\xbf"
_CUT = re.compile(rb"\}\s*,")
_CUT_TRIES = 4  # candidate cuts checked per chunk before reading on
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


class Segment(NamedTuple):  # a tuple: one is made per file, and a dataclass costs 3x as much
    """Part of a page that is a JSON document of its own."""

    data: bytes
    first_index: int  # the page index of the segment's first record
    offset: int  # file byte = segment byte + offset
    whole: bool  # the whole page (minus any byte-order mark): may be an object or anything


@dataclass(slots=True)
class FileDigest:
    """What the ledger records of a file: its size and SHA-256, taken as it is read."""

    name: str
    bytes: int = 0
    sha256: str = ""


def segments(
    file: InputFile, digest: FileDigest, chunk_bytes: int = CHUNK_BYTES
) -> Generator[Segment, None, None]:
    """The page's segments in order. ``digest`` is complete once they are exhausted or the
    iterator is closed (use ``contextlib.closing`` when a consumer may stop early)."""
    data = file.read_whole(chunk_bytes)
    if data is not None:  # most pages
        digest.bytes, digest.sha256 = len(data), hashlib.sha256(data).hexdigest()
        yield whole_page(data)
        return
    with file.open() as stream:
        reader = _HashingReader(stream, digest)
        try:
            head, more = b"", b"."
            while more and (len(head) < len(BOM) or not head.lstrip(BOM + b" \t\r\n")):
                more = reader.read(chunk_bytes)  # up to the first byte that is no BOM or space
                head += more
            bom = len(BOM) if head.startswith(BOM) else 0
            if more and head[bom:].lstrip().startswith(b"["):
                yield from _array_segments(reader, head[bom:], bom, chunk_bytes)
            else:
                yield Segment(head[bom:] + reader.read(), 0, bom, whole=True)
        finally:  # also when decoding stopped early: the digest always covers the whole file
            reader.drain(chunk_bytes)
            digest.sha256 = reader.sha.hexdigest()


def whole_page(data: bytes) -> Segment:
    """A page read whole as one segment, without its byte-order mark."""
    bom = len(BOM) if data.startswith(BOM) else 0
    return Segment(data[bom:], 0, bom, whole=True)


def _array_segments(
    reader: _HashingReader, buffer: bytes, offset: int, chunk_bytes: int
) -> Generator[Segment, None, None]:
    """Segments of an array page, ``buffer`` its start (from the first byte after any BOM)."""
    index = 0
    start = b""  # a later segment's "[" stands for the comma before it
    want = chunk_bytes
    while True:
        more = reader.read(want)
        if not more:
            if start and buffer.lstrip().startswith(b"]"):
                start = b"[0,"  # keep the comma, so that the trailing comma is reported
            yield Segment(start + buffer, index, offset - len(start), whole=False)
            return
        buffer += more
        cut = _find_cut(start, buffer)
        if cut is None:  # a record longer than a chunk: read twice as much, so time stays linear
            want *= 2
            continue
        want = chunk_bytes
        end, comma, count = cut
        yield Segment(start + buffer[:end] + b"]", index, offset - len(start), whole=False)
        index += count
        offset += comma + 1
        buffer = buffer[comma + 1 :]
        start = b"["


def _find_cut(start: bytes, buffer: bytes) -> tuple[int, int, int] | None:
    """(end of the last record, its comma, records before it) for the last top-level cut of
    ``buffer`` among the last few candidates, or None."""
    cuts = [(m.start() + 1, m.end() - 1) for m in _CUT.finditer(buffer)]  # "}" ... ","
    for end, comma in reversed(cuts[-_CUT_TRIES:]):
        try:
            count = len(_RAW_ARRAY.decode(start + buffer[:end] + b"]"))
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            continue
        return end, comma, count
    return None


class _HashingReader:
    """A binary stream that feeds what is read into ``digest``."""

    def __init__(self, stream: BinaryIO, digest: FileDigest) -> None:
        self.stream, self.digest, self.sha = stream, digest, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.sha.update(data)
        self.digest.bytes += len(data)
        return data

    def drain(self, chunk_bytes: int) -> None:
        while self.read(chunk_bytes):
            pass
