"""The pieces wal-receive stores of a segment that is not complete yet, and their reassembly.

A synchronous commit must wait for one small write, not a 16 MiB upload, so wal-receive stores what
arrived since its last write as one small object:

    receive/<segment name>/<start offset, 8 hex>-<end offset, 8 hex>     bytes [start, end) of the segment

each a walship object (header, checksum, codec, encryption as any WAL object), written create-only. Once
the segment is complete it is stored as the normal object wal/<segment name> (the same bytes that
archive_command stores, so either may come first) and its pieces are deleted. wal-fetch reassembles the
pieces of the last segment (contiguous from offset 0), zero-filled to the segment size as PostgreSQL's
own .partial files are, when the complete segment is not stored: a restore after losing the primary then
replays to the last received commit.

Light imports: wal-fetch (restore_command) imports this module on a miss.
"""

from __future__ import annotations

from walship import pipeline
from walship.repo.layout import received_piece_of_key, received_segment_prefix
from walship.storage import Store


def pieces(store: Store, segment_name: str) -> list[tuple[int, int, str]]:
    """(start, end, key) of the stored pieces of the segment, by start offset."""
    found = []
    for info in store.list(received_segment_prefix(segment_name)):
        piece = received_piece_of_key(info.key)
        if piece is not None and piece[0] == segment_name:
            found.append((piece[1], piece[2], info.key))
    return sorted(found)


def contiguous_end(found: list[tuple[int, int, str]]) -> int:
    """How far the pieces cover the segment from offset 0 without a hole."""
    end = 0
    for start, stop, _key in found:
        if start > end:
            break
        end = max(end, stop)
    return end


def assemble(store: Store, segment_name: str, segment_size: int, keyring=None) -> tuple[bytes, int] | None:
    """(the segment as far as it was received, zero-filled to segment_size; how many bytes were received),
    or None when no piece of it starts at offset 0."""
    found = pieces(store, segment_name)
    if not found or found[0][0] != 0:
        return None
    buffer = bytearray(segment_size)
    end = 0
    for start, stop, key in found:
        if start > end:
            break                    # a hole: what follows it cannot be replayed
        if stop <= end:
            continue
        data = pipeline.unpack(store.get(key), f"received piece {key}", keyring)
        if len(data) != stop - start or stop > segment_size:
            from walship.errors import IntegrityError
            raise IntegrityError(f"received piece {key} holds {len(data)} bytes, not {stop - start}",
                                 "the object is damaged; the complete segment, when archived, replaces it")
        buffer[end:stop] = data[end - start:]
        end = stop
    return bytes(buffer), end
