"""The pages of a Parquet file, read from their headers before any page is unpacked.

A Parquet reader unpacks a whole page at once, and a page header says how large it unpacks to;
the footer's sizes are only the writer's word. Walking the headers of every column chunk tells
the largest page and the file's unpacked size, so an import can refuse a file whose pages would
not fit its memory bound before reading any of them. A dictionary page weighs twice its size:
a reader keeps it decoded beside the page (pyarrow holds about four times a dictionary page
while it reads one, twice a data page). The headers are Thrift compact protocol
structs (parquet.thrift ``PageHeader``); this reads only what it needs to skip them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow.parquet as pq

__all__ = ["PageFormatError", "PageSizes", "page_sizes"]

# Real page headers are well under a KiB (statistics are truncated by writers); a larger one
# is refused rather than walked byte by byte.
_MAX_HEADER_BYTES = 1 << 20
_FIRST_READ = 1 << 12
# Compact protocol type ids.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = range(9)
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12
_DICTIONARY_PAGE = 2
_MAX_DEPTH = 32


class PageFormatError(ValueError):
    """A page header that cannot be read: the file is corrupt or not what its footer says."""


@dataclass
class PageSizes:
    """The heaviest page (its unpacked bytes, twice that for a dictionary page, and where it
    is) and the unpacked bytes of all pages."""

    largest: int = 0
    where: str = ""
    unpacked: int = 0


def page_sizes(path: Path, meta: pq.FileMetaData) -> PageSizes:
    """Every page of every column chunk of the file, measured from its header.

    Raises:
        PageFormatError: a header is corrupt, or the pages overrun their column chunk.
        OSError: the file cannot be read.
    """
    sizes = PageSizes()
    with path.open("rb") as fh:
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                start = chunk.data_page_offset
                if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                    start = chunk.dictionary_page_offset
                end = start + chunk.total_compressed_size
                pos = start
                while pos < end:
                    kind, unpacked, packed, length = _header(fh, pos)
                    sizes.unpacked += unpacked
                    weight = unpacked * (2 if kind == _DICTIONARY_PAGE else 1)
                    if weight > sizes.largest:
                        sizes.largest = weight
                        page = "a dictionary page" if kind == _DICTIONARY_PAGE else "a page"
                        sizes.where = (
                            f"{page} of column {chunk.path_in_schema!r} of row group {g + 1}"
                        )
                    pos += length + packed
                if pos != end:
                    raise PageFormatError(
                        f"the pages of column {chunk.path_in_schema!r} of row group {g + 1} "
                        "overrun the column chunk"
                    )
    return sizes


def _header(fh: BinaryIO, pos: int) -> tuple[int, int, int, int]:
    """(page type, unpacked size, packed size, header length) of the page header at ``pos``."""
    want = _FIRST_READ
    while True:
        fh.seek(pos)
        data = fh.read(want)
        try:
            reader = _Compact(data)
            fields = reader.struct_ints()
            break
        except _Short:
            if len(data) < want or want >= _MAX_HEADER_BYTES:
                raise PageFormatError(f"a page header at byte {pos} is cut short") from None
            want *= 4
    unpacked, packed = fields.get(2, -1), fields.get(3, -1)
    if unpacked < 0 or packed < 0:
        raise PageFormatError(f"the page header at byte {pos} has no valid page sizes")
    return fields.get(1, -1), unpacked, packed, reader.pos


class _Short(Exception):
    """The buffer ended inside the header: read more."""


class _Compact:
    """A reader of Thrift compact protocol values in a buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Short
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise PageFormatError("a Thrift varint is too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip_bytes(self, n: int) -> None:
        if n < 0:
            raise PageFormatError("a negative Thrift length")
        if self.pos + n > len(self.data):
            raise _Short
        self.pos += n

    def struct_ints(self) -> dict[int, int]:
        """Read a struct; returns its top-level integer fields by id, skips the rest."""
        ints: dict[int, int] = {}
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == _STOP:
                return ints
            delta = head >> 4
            last = last + delta if delta else self.zigzag()
            if kind in (_I16, _I32, _I64):
                ints[last] = self.zigzag()
            else:
                self.skip(kind, 0)

    def skip_element(self, kind: int, depth: int) -> None:
        """Skip a list, set or map element: a bool there is a byte of its own."""
        if kind in (_TRUE, _FALSE):
            self.skip_bytes(1)
        else:
            self.skip(kind, depth)

    def skip(self, kind: int, depth: int) -> None:
        """Skip a field's value of type ``kind`` (a bool field's value is in its type)."""
        if depth > _MAX_DEPTH:
            raise PageFormatError("Thrift values nested too deeply")
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.skip_bytes(1)
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.skip_bytes(8)
        elif kind == _BINARY:
            self.skip_bytes(self.varint())
        elif kind in (_LIST, _SET):
            head = self.byte()
            size = head >> 4
            if size == 15:
                size = self.varint()
            for _ in range(size):
                self.skip_element(head & 0x0F, depth + 1)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip_element(types >> 4, depth + 1)
                    self.skip_element(types & 0x0F, depth + 1)
        elif kind == _STRUCT:
            while (head := self.byte()) & 0x0F != _STOP:
                if not head >> 4:  # the field id follows in full
                    self.zigzag()
                self.skip(head & 0x0F, depth + 1)
        else:
            raise PageFormatError(f"unknown Thrift type {kind}")
