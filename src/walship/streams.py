"""Small I/O adapters shared by the restore paths."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of bytes chunks (what tarfile's stream mode reads)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]          # a view: no copy of the rest of the chunk
        return n

    def rest(self) -> Iterator[bytes]:
        """What was not read yet, as chunks."""
        if self._pending:
            yield bytes(self._pending)
            self._pending = memoryview(b"")
        yield from self._chunks
