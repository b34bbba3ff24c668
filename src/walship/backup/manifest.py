"""The manifest: one JSON line per tar member, in the order of the tar stream.

Each part has its own manifest object next to it, so that a restore checks a
part against its manifest in lockstep while it extracts it: constant memory
whatever the number of files, and parts restored in parallel.

A file's line holds its path, size, mode, mtime and SHA-256 of the bytes the
backup holds; directories and links have no size or digest, links a target.
A file larger than a part is stored as slices, one per part: each slice's line
also holds its offset in the file and the file's whole size, and its size and
SHA-256 are those of the slice; a restore writes the slices in parallel and
checks that they cover the file exactly (SliceTracker).

An incremental backup stores a relation file as pieces: members of at most
PIECE bytes holding only the blocks it stores, each line listing them as
`blocks` runs [first, count] and the file's size as read (backup/incremental.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from walship.errors import IntegrityError


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: str
    type: str                  # "file", "dir" or "link"
    mode: int
    mtime: float
    size: int = 0
    sha256: str = ""
    target: str = ""
    offset: int | None = None  # a slice of a larger file: where it starts
    file_size: int = 0         # ... and the whole file's size (also of an incremental's piece)
    blocks: tuple[tuple[int, int], ...] | None = None   # an incremental's piece: (first block, count) runs stored
    piece: int = 0             # ... its number among the file's pieces (0: the first)

    @property
    def starts_file(self) -> bool:
        """Whether this line counts as a file of the backup (a whole file or a file's first slice)."""
        return self.type == "file" and not self.offset and not self.piece

    def line(self) -> bytes:
        doc: dict = {"path": self.path, "type": self.type, "mode": self.mode, "mtime": self.mtime}
        if self.type == "file":
            doc["size"] = self.size
            doc["sha256"] = self.sha256
        if self.target:
            doc["target"] = self.target
        if self.offset is not None:
            doc["offset"] = self.offset
            doc["file_size"] = self.file_size
        if self.blocks is not None:
            doc["blocks"] = [list(run) for run in self.blocks]
            doc["file_size"] = self.file_size
            if self.piece:
                doc["piece"] = self.piece
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def parse_lines(chunks: Iterable[bytes], name: str) -> Iterator[ManifestEntry]:
    """Entries from a stream of JSON-lines chunks."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield _parse(line, name)
    if pending.strip():
        yield _parse(pending, name)


def _parse(line: bytes, name: str) -> ManifestEntry:
    try:
        doc = json.loads(line)
        return ManifestEntry(path=doc["path"], type=doc["type"], mode=int(doc["mode"]), mtime=float(doc["mtime"]),
                             size=int(doc.get("size", 0)), sha256=doc.get("sha256", ""), target=doc.get("target", ""),
                             offset=int(doc["offset"]) if "offset" in doc else None,
                             file_size=int(doc.get("file_size", 0)),
                             blocks=tuple((int(a), int(b)) for a, b in doc["blocks"]) if "blocks" in doc else None,
                             piece=int(doc.get("piece", 0)))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{name} is corrupt: a line is not a manifest entry",
                             "the backup cannot be verified; restore another one") from None


class SliceTracker:
    """The slices of each sliced file met so far, to prove at the end that they tile it exactly."""

    def __init__(self):
        self._files: dict[str, tuple[int, list[tuple[int, int]]]] = {}   # path -> (file size, [(offset, size)])
        self._lock = threading.Lock()

    def add(self, entry: ManifestEntry, what: str) -> None:
        if entry.offset is None or entry.offset < 0 or entry.offset + entry.size > entry.file_size or entry.size <= 0:
            raise IntegrityError(f"{what}: slice of {entry.path} at {entry.offset} lies outside the file",
                                 "the backup is corrupt; restore another one")
        with self._lock:
            file_size, ranges = self._files.setdefault(entry.path, (entry.file_size, []))
            if file_size != entry.file_size:
                raise IntegrityError(f"{what}: slices of {entry.path} disagree on its size",
                                     "the backup is corrupt; restore another one")
            ranges.append((entry.offset, entry.size))

    def sliced(self) -> dict[str, int]:
        """path -> file size of every sliced file met."""
        return {path: size for path, (size, _) in self._files.items()}

    def check_complete(self, what: str) -> None:
        """IntegrityError unless every sliced file is covered by its slices, each byte once."""
        for path, (file_size, ranges) in sorted(self._files.items()):
            end = 0
            for offset, size in sorted(ranges):
                if offset != end:
                    raise IntegrityError(f"{what}: {path} is incomplete or overlaps itself "
                                         f"(bytes {end}..{offset} are not stored once)",
                                         "the backup is corrupt; restore another one")
                end = offset + size
            if end != file_size:
                raise IntegrityError(f"{what}: {path} is incomplete (its slices end at {end} of {file_size} bytes)",
                                     "the backup is corrupt; restore another one")
